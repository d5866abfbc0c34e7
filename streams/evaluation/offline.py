"""Replay an event log through recommenders and score them all on the same evaluation points.

A recommender here is anything with ``recommend(batch) -> lists``: given consecutive events of the log (in
order), it returns the ranked item ids it would publish after each of them. The baselines answer event by
event; the recommender core is driven in micro-batches of ``batch_size`` like the worker (its session state is
exact per event; what it learns from a batch it may only use from the next batch on, as in the worker).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamrec.streams.evaluation.scoring import EvalPoint, PointScores, coverage, score_lists
from streamrec.streams.schemas import Event

__all__ = ["Recommender", "SystemResult", "replay_lists", "run_system"]


class Recommender(Protocol):
    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        """The ranked item ids published after each event of ``batch`` (consecutive events of the log)."""
        ...


@dataclass
class SystemResult:
    """One recommender's scores on the evaluation points, and what it cost."""

    name: str
    kind: str  # "strategy" | "baseline" | "kafka"
    params: dict[str, Any]
    scores: PointScores
    coverage: float
    lists: list[list[str]] = field(repr=False)  # aligned with the points
    cpu_s: float = 0.0
    wall_s: float = 0.0
    events: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": self.params,
            "metrics": {m: round(v, 6) for m, v in self.scores.means().items()},
            "coverage": round(self.coverage, 6),
            "cpu_us_per_event": round(self.cpu_s / max(1, self.events) * 1e6, 1),
            "wall_s": round(self.wall_s, 2),
        }


def replay_lists(
    rec: Recommender, events: Sequence[Event], points: Sequence[EvalPoint], *, batch_size: int
) -> list[list[str]]:
    """Drive ``rec`` over ``events`` in batches; return the lists at the evaluation points (their order)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    wanted = {p.position for p in points}
    at: dict[int, list[str]] = {}
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        lists = rec.recommend(batch)
        if len(lists) != len(batch):
            raise RuntimeError(f"recommender answered {len(lists)} lists for {len(batch)} events")
        for offset, recs in enumerate(lists):
            if start + offset in wanted:
                at[start + offset] = list(recs)
    return [at[p.position] for p in points]


def run_system(
    name: str,
    kind: str,
    params: dict[str, Any],
    rec: Recommender,
    events: Sequence[Event],
    points: Sequence[EvalPoint],
    *,
    k: int,
    catalogue_size: int,
    batch_size: int,
) -> SystemResult:
    """Replay, score and time one recommender."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    lists = replay_lists(rec, events, points, batch_size=batch_size)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return SystemResult(
        name,
        kind,
        params,
        score_lists(lists, points, k),
        coverage(lists, k, catalogue_size),
        lists,
        cpu,
        wall,
        len(events),
    )
