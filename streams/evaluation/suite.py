"""One evaluation: the baselines and the given recommenders replayed over one log, compared on the same points.

``evaluate_log`` returns the per-system results and the JSON document (``report`` module) the command writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from streamrec.streams.evaluation.baselines import ItemSpace, make_baseline
from streamrec.streams.evaluation.data import EventLog
from streamrec.streams.evaluation.offline import Recommender, SystemResult, run_system
from streamrec.streams.evaluation.report import compare, goals, machine, system_intervals, versions
from streamrec.streams.evaluation.scoring import EvalPoint, eval_points
from streamrec.streams.schemas import EventType

__all__ = ["Candidate", "Evaluation", "EvaluationPlan", "baseline_candidates", "document", "evaluate_log"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationPlan:
    k: int = 10
    batch_size: int = 64  # micro-batch of the recommender core (a loaded worker's; `streamrec evaluate --batch-size`)
    baselines: tuple[str, ...] = ("popularity", "popularity_decayed", "transition", "cooccurrence")
    decayed_half_lives_s: tuple[float, ...] = (3_600.0, 86_400.0, 604_800.0)
    cooccurrence_windows: tuple[int, ...] = (5, 20)
    bootstrap_rounds: int = 2000
    seed: int = 0
    consumed_types: tuple[str, ...] | None = None  # excluded for the baselines (None: every item-naming type)


@dataclass(frozen=True)
class Candidate:
    """A system to evaluate: ``build()`` gives a fresh recommender (built when its turn comes)."""

    name: str
    kind: str
    params: dict[str, Any]
    build: Callable[[], Recommender]
    batch_size: int | None = None  # None: the plan's


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def baseline_candidates(plan: EvaluationPlan, space: ItemSpace) -> list[Candidate]:
    consumed = None if plan.consumed_types is None else frozenset(EventType(t) for t in plan.consumed_types)
    make = partial(make_baseline, consumed_types=consumed)
    out = []
    for name in plan.baselines:
        if name == "popularity_decayed":
            for h in plan.decayed_half_lives_s:
                out.append(
                    Candidate(
                        f"popularity_decayed (half-life {_duration(h)})",
                        "baseline",
                        {"baseline": name, "half_life_s": h},
                        partial(make, name, space, plan.k, half_life_s=h),
                    )
                )
        elif name == "cooccurrence":
            for w in plan.cooccurrence_windows:
                out.append(
                    Candidate(
                        f"cooccurrence (last {w} items)",
                        "baseline",
                        {"baseline": name, "window": w},
                        partial(make, name, space, plan.k, window=w),
                    )
                )
        else:
            out.append(Candidate(name, "baseline", {"baseline": name}, partial(make, name, space, plan.k)))
    return out


@dataclass
class Evaluation:
    log: EventLog
    points: list[EvalPoint]
    results: list[SystemResult] = field(default_factory=list)
    reference: str | None = None


def evaluate_log(
    log_: EventLog,
    plan: EvaluationPlan,
    strategies: Sequence[Candidate],
    *,
    reference: str | None = None,
    progress: Callable[[str], None] = print,
) -> Evaluation:
    """Replay ``log_`` through the baselines and ``strategies``; ``reference`` (default: the first strategy)
    is the system compared against all others."""
    points = eval_points(log_.events)
    if not points:
        raise ValueError("the log has no evaluation point (no user with two events)")
    space = ItemSpace.build(log_.catalogue, (e.item_id for e in log_.events if e.item_id is not None))
    ev = Evaluation(log_, points, reference=reference or (strategies[0].name if strategies else None))
    for c in [*strategies, *baseline_candidates(plan, space)]:
        t = time.perf_counter()
        result = run_system(
            c.name,
            c.kind,
            c.params,
            c.build(),
            log_.events,
            points,
            k=plan.k,
            catalogue_size=len(log_.catalogue),
            batch_size=c.batch_size or plan.batch_size,
        )
        ev.results.append(result)
        m = result.scores.means()
        progress(
            f"  {c.name:<36} HR@{plan.k} {m['hr']:.4f}  MRR {m['mrr']:.4f}  NDCG {m['ndcg']:.4f}  "
            f"({time.perf_counter() - t:.0f} s)"
        )
    return ev


def document(
    ev: Evaluation, plan: EvaluationPlan, *, started: str, command: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document of an evaluation (everything the table and the plot show, and how it was made)."""
    by_name = {r.name: r for r in ev.results}
    ref = by_name.get(ev.reference) if ev.reference else None
    comparisons = (
        compare(ref, [r for r in ev.results if r is not ref], rounds=plan.bootstrap_rounds, seed=plan.seed)
        if ref
        else {}
    )
    baselines = [r for r in ev.results if r.kind == "baseline"]
    return {
        "benchmark": "evaluate",
        "started": started,
        "command": command,
        "machine": machine(),
        "versions": versions(),
        "plan": asdict(plan),
        "log": {
            "description": ev.log.describe(),
            "name": ev.log.name,
            "events": len(ev.log.events),
            "users": len(ev.log.users),
            "catalogue": len(ev.log.catalogue),
            "source": ev.log.source,
            "skipped": ev.log.skipped,
        },
        "points": len(ev.points),
        "k": plan.k,
        "definition": "next item: the list published after a user's event t scored against the item of the "
        "user's event t+1 (every item-naming event but a user's first); baselines learned causally "
        "from every user's events up to t; the same exclusions for all (items the user's events "
        "named); intervals: paired bootstrap over users, 95 %",
        "systems": [r.summary() for r in ev.results],
        "intervals": system_intervals(ev.results, rounds=plan.bootstrap_rounds, seed=plan.seed),
        "reference": ev.reference,
        "comparisons": comparisons,
        "goals": goals(ref, baselines, comparisons) if ref else {},
        **(extra or {}),
    }
