"""Pluggable candidate signals of the recommender core.

A signal turns a batch of :class:`SignalRequest` (one per event: the event, the user's state after it,
the session vector) into scored candidates, one ``{item_id: score}`` per request, highest = best. The
core (:mod:`streamrec.streams.core`) normalises each signal's scores by their maximum in the list and
blends them with the signal's weight. Adding a signal is a new class here (or anywhere) with a ``name``
and ``candidates``, passed to the core in its ``signals`` list: nothing else changes.

Signals must not recommend from the exclusions they are handed (``request.exclude``); the core also
drops everything in the user's consumed set afterwards, so a signal may over-fetch instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamrec.index import VectorIndex
from streamrec.streams.covisit import CovisitGraph
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import Event
from streamrec.streams.session import SessionState

__all__ = [
    "CovisitScorer",
    "CovisitSignal",
    "PopularitySignal",
    "Signal",
    "SignalRequest",
    "TextSignal",
    "WeightedSignal",
]

Vector = npt.NDArray[np.float32]
Scores = dict[str, float]


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """One event's question to the signals. ``state``: the user's session after the event; ``query``: the
    session vector (None before the first usable vector); ``now_s``: the event time; ``exclude``: ids the
    signal must not return."""

    event: Event
    state: SessionState
    query: Vector | None
    now_s: float
    exclude: frozenset[str] | set[str]


class Signal(Protocol):
    @property
    def name(self) -> str: ...

    def candidates(self, requests: Sequence[SignalRequest], depth: int) -> list[Scores]:
        """Up to ``depth`` scored candidates per request, aligned with ``requests``."""
        ...


@dataclass(frozen=True, slots=True)
class WeightedSignal:
    """A signal and its blending weight (its scores are scaled to [0, weight] per list)."""

    signal: Signal
    weight: float
    prior: bool = False  # True: a prior (popularity) -- a list made only of priors counts as a fallback
    # True: asked only for the events where the signals before it in the list found fewer than `depth`
    # candidates, or that are searches (the text signal by default: it answers cold starts and queries)
    when_thin: bool = False


class TextSignal:
    """Nearest items to the session vector in the HNSW index (text similarity of titles and queries)."""

    name = "text"

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def candidates(self, requests: Sequence[SignalRequest], depth: int) -> list[Scores]:
        out: list[Scores] = [{} for _ in requests]
        asked = [i for i, r in enumerate(requests) if r.query is not None]
        if not asked or depth <= 0:
            return out
        queries = np.stack([requests[i].query for i in asked])  # type: ignore[misc]
        found = self.index.search(queries, depth, exclude=[requests[i].exclude for i in asked])
        for i, hits in zip(asked, found, strict=True):
            out[i] = {item: max(0.0, float(s)) for item, s in zip(hits.ids, hits.scores, strict=True)}
        return out


class CovisitScorer(Protocol):
    """What scores a batch's co-visitation candidates (:meth:`~streamrec.streams.covisit.CovisitGraph.scores_many`)."""

    def scores_many(
        self, users: Sequence[tuple[Sequence[str], Collection[str]]], now_s: float, limit: int | None = None
    ) -> list[dict[str, float]]: ...


class CovisitSignal:
    """What other users chose next to the user's recent items (:mod:`streamrec.streams.covisit`)."""

    name = "covisit"

    def __init__(
        self,
        graph: CovisitGraph,
        eligible: Callable[[str], bool] | None = None,
        scorer: CovisitScorer | None = None,
    ) -> None:
        self.graph = graph
        self.eligible = eligible
        # who scores: the graph itself, or e.g. the owner process (streamrec.streams.covisit_serve.RemoteScorer)
        self.scorer: CovisitScorer = scorer if scorer is not None else graph

    def candidates(self, requests: Sequence[SignalRequest], depth: int) -> list[Scores]:
        if not requests:
            return []
        found = self.scorer.scores_many(
            [(r.state.recent_items, r.exclude) for r in requests], max(r.now_s for r in requests), limit=depth
        )
        if self.eligible is None:
            return found
        eligible = self.eligible
        return [{j: s for j, s in scores.items() if eligible(j)} for scores in found]


class PopularitySignal:
    """Recently popular items: the prior for users (and items) the other signals know nothing about."""

    name = "popularity"

    def __init__(self, popularity: RecentPopularity, eligible: Callable[[str], bool] | None = None) -> None:
        self.popularity = popularity
        self.eligible = eligible

    def candidates(self, requests: Sequence[SignalRequest], depth: int) -> list[Scores]:
        # One ranked list per batch (popularity learns between batches, and a common decay does not change the
        # order), cut per event: the exact exclusions here, the consumed set by the core on the blended list.
        if not requests:
            return []
        # a prior: a user whose exclusions fill the popular head gets fewer than `depth` (never a scan of 250+)
        longest = min(max(len(r.exclude) for r in requests), 2 * depth)
        now_s = max(r.now_s for r in requests)
        ranked = self.popularity.top(depth + longest, now_s, eligible=self.eligible)
        out: list[Scores] = []
        for r in requests:
            scores: Scores = {}
            for item, score in ranked:
                if item not in r.exclude:
                    scores[item] = score
                    if len(scores) == depth:
                        break
            out.append(scores)
        return out
