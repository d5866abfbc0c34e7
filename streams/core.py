"""The recommender core: one Kafka-free batch step that the worker, the evaluation and the benchmarks call.

Events + session states in, new states + ranked lists (+ what the collaborative signal learned) out::

    core = RecommenderCore(encoder=encoder, index=index, titles=titles, strategy=make_strategy("decayed_mean"),
                           popularity=RecentPopularity(half_life_s=86400), covisit=CovisitGraph(),
                           config=CoreConfig(k=10))
    states: dict[str, SessionState | None] = {}
    for batch in batches_in_time_order(events):          # list[Event], stream order
        result = core.step(batch, {e.user_id: states.get(e.user_id) for e in batch})
        core.learn(result)                               # offline: the co-visitation graph learns at once
        states.update(result.states)
        for event, out in zip(batch, result.outcomes):   # out.items: [(item_id, score)], best first
            ...

In the worker (:mod:`streamrec.streams.hotpath`) ``core.learn`` is NOT called: ``result.deltas`` go to
Kafka, the item's owner merges them and every worker applies the published rows
(:mod:`streamrec.streams.covisit_sync`) -- so all workers serve the same graph.

The step, per batch (one encoder call, one batched index search):

1. session plans for every event (what must be encoded: queries, titles of items not in the index);
2. one encoder call for the batch's texts;
3. in event order: the session update (a user's later event sees the earlier one), the user's consumed set,
   the co-visitation deltas (pairs of the event's item with the user's previous items);
4. every signal once for the whole batch (text: batched HNSW search of the session vectors; co-visitation;
   popularity), blended per event: ``score(j) = sum_s weight_s * score_s(j) / max_j' score_s(j')``;
   excluded: the user's recent / purchased items (exact) and consumed set (hashes, see
   :mod:`streamrec.streams.consumed`); a list is topped up from the catalogue when the signals run dry;
5. the popularity counts learn the batch's events (after the lists are made: no event sees a later one;
   the co-visitation deltas likewise reach the graph after the batch, through ``learn`` or Kafka);
6. the live quality metric: an event naming an item is scored against the list the user was shown last
   (``outcome.live_rank``: 1-based rank, None = miss; ``live_evaluated``), then the new list is remembered
   in the state (``last_list``).

Time: the batch's own event times drive every decay (popularity, co-visitation), so a replay computes what
the live stream computed. Cost per event, bounded: ``covisit.sources x covisit.per_source`` graph reads,
``depth`` candidates per signal, one exclusion check per candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from streamrec.encoders import TextEncoder
from streamrec.errors import ConfigError
from streamrec.index import UnknownItemError, VectorIndex
from streamrec.streams.covisit import CovisitDelta, CovisitGraph, DeltaBatch
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import SessionPlan, SessionState, SessionStrategy, exclusions
from streamrec.streams.signals import (
    CovisitScorer,
    CovisitSignal,
    PopularitySignal,
    SignalRequest,
    TextSignal,
    WeightedSignal,
)

__all__ = ["CoreConfig", "EventOutcome", "RecommenderCore", "StepResult", "default_signals"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Blending. Weights scale each signal's list-normalised scores (0 switches a signal off)."""

    k: int = 10
    depth: int = 30  # candidates asked of each signal per event
    covisit_weight: float = 1.0
    text_weight: float = 0.1
    popularity_weight: float = 0.1
    # False: the text signal (one index search) runs only for searches and for events where co-visitation
    # found fewer than `depth` candidates -- cold users and items, where text is what helps; True: always
    text_always: bool = False

    def __post_init__(self) -> None:
        if self.k < 1 or self.depth < 1:
            raise ConfigError("k and depth must be >= 1")
        for name in ("covisit_weight", "text_weight", "popularity_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0")


@dataclass(slots=True)
class EventOutcome:
    """What the core answered for one event."""

    items: list[tuple[str, float]] = field(default_factory=list)
    fallback: str | None = None  # "no_session_vector" | "no_neighbours": only priors (popularity) answered
    duplicate: bool = False
    live_evaluated: bool = False  # the event named an item and the user had been shown a list before
    live_rank: int | None = None  # 1-based rank of that item in the previous list; None: not in it


@dataclass(slots=True)
class StepResult:
    outcomes: list[EventOutcome]
    states: dict[str, SessionState]  # final state of every user of the batch
    deltas: list[CovisitDelta]  # what the collaborative signal learned from the batch
    encode_s: float = 0.0
    index_s: float = 0.0  # item vectors + signals + blending
    texts_encoded: int = 0


def default_signals(
    index: VectorIndex,
    covisit: CovisitGraph | None,
    popularity: RecentPopularity,
    config: CoreConfig,
    covisit_scorer: CovisitScorer | None = None,
) -> list[WeightedSignal]:
    """Co-visitation (scored by ``covisit_scorer``, default the graph itself), text when thin, popularity prior."""
    eligible = _eligible(index)
    out = []
    if covisit is not None:
        out.append(WeightedSignal(CovisitSignal(covisit, eligible, covisit_scorer), config.covisit_weight))
    out.append(
        WeightedSignal(TextSignal(index), config.text_weight, when_thin=covisit is not None and not config.text_always)
    )
    out.append(WeightedSignal(PopularitySignal(popularity, eligible), config.popularity_weight, prior=True))
    return [s for s in out if s.weight > 0]


def _eligible(index: VectorIndex) -> Callable[[str], bool]:
    check: Callable[[str], bool] | None = getattr(index, "is_available", None)
    return check if check is not None else index.__contains__


class RecommenderCore:
    """The batch step (module docstring). Not thread-safe: one caller at a time (the worker's hot path)."""

    def __init__(
        self,
        *,
        encoder: TextEncoder,
        index: VectorIndex,
        titles: Mapping[str, str],
        strategy: SessionStrategy,
        popularity: RecentPopularity,
        covisit: CovisitGraph | None = None,
        config: CoreConfig | None = None,
        signals: Sequence[WeightedSignal] | None = None,
        covisit_scorer: CovisitScorer | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.titles = titles
        self.strategy = strategy
        self.popularity = popularity
        self.covisit = covisit
        self.config = config or CoreConfig()
        self.signals = (
            list(signals)
            if signals is not None
            else default_signals(index, covisit, popularity, self.config, covisit_scorer)
        )
        self._dim = encoder.dim
        self._filler = _unit(np.random.default_rng(7).standard_normal(self._dim))

    @property
    def name(self) -> str:
        return self.strategy.name

    def learn(self, result: StepResult) -> None:
        """Offline use: apply the batch's co-visitation deltas to this core's graph now."""
        if self.covisit is not None and result.deltas:
            self.covisit.apply(result.deltas)

    # ------------------------------------------------------------------ the step
    def step(self, events: Sequence[Event], states: Mapping[str, SessionState | None]) -> StepResult:
        t0 = time.perf_counter()
        item_vectors = self._item_vectors({e.item_id for e in events if e.item_id is not None})
        plans = self._plan(events, states, item_vectors)
        texts = list(dict.fromkeys(t for p in plans for t in p.texts))
        t1 = time.perf_counter()
        rows = self.encoder.encode(texts) if texts else np.empty((0, self._dim), np.float32)
        row_of = {text: i for i, text in enumerate(texts)}
        encode_s = time.perf_counter() - t1

        t2 = time.perf_counter()
        current: dict[str, SessionState | None] = {e.user_id: states.get(e.user_id) for e in events}
        requests: list[SignalRequest] = []
        outcomes: list[EventOutcome] = []
        config = self.strategy.config
        deltas = DeltaBatch(self.covisit.config) if self.covisit is not None else None
        popular: list[tuple[str, float, float]] = []
        for e, plan in zip(events, plans, strict=True):
            before = current[e.user_id]
            update = self.strategy.apply(
                before,
                plan,
                item_vector=item_vectors.get(e.item_id) if e.item_id is not None else None,
                text_vectors=rows[[row_of[t] for t in plan.texts]] if plan.texts else rows[:0],
            )
            current[e.user_id] = update.state
            requests.append(
                SignalRequest(e, update.state, update.query, e.ts_ms / 1000, exclusions(update.state, config))
            )
            outcomes.append(EventOutcome(duplicate=update.duplicate))
            if update.duplicate or e.item_id is None or e.type is EventType.SEARCH:
                continue
            weight = config.weight_of(e.type)
            popular.append((e.item_id, weight, e.ts_ms / 1000))
            if deltas is not None:
                pair_weight = weight if deltas.config.type_weighted else float(weight > 0)
                deltas.observe(e.item_id, pair_weight, e.ts_ms / 1000, before.recent_items if before else ())

        lists = self._blend(requests)
        for item, weight, ts_s in popular:  # learned after the batch answered: no event sees a later one
            self.popularity.add(item, weight, ts_s)
        last_list = {u: (s.last_list if s is not None else ()) for u, s in states.items()}
        for e, outcome, (items, fallback) in zip(events, outcomes, lists, strict=True):
            outcome.items, outcome.fallback = items, fallback
            shown = last_list.get(e.user_id, ())
            if not outcome.duplicate and e.item_id is not None and e.type is not EventType.SEARCH and shown:
                outcome.live_evaluated = True
                outcome.live_rank = shown.index(e.item_id) + 1 if e.item_id in shown else None
            last_list[e.user_id] = tuple(i for i, _ in items)
        final = {u: replace(s, last_list=last_list[u]) for u, s in current.items() if s is not None}
        index_s = (time.perf_counter() - t2) + (t1 - t0)
        return StepResult(outcomes, final, deltas.deltas() if deltas is not None else [], encode_s, index_s, len(texts))

    def _plan(
        self, events: Sequence[Event], states: Mapping[str, SessionState | None], item_vectors: Mapping[str, Vector]
    ) -> list[SessionPlan]:
        plans: list[SessionPlan] = []
        planning: dict[str, SessionState | None] = {e.user_id: states.get(e.user_id) for e in events}
        for e in events:
            title = self.titles.get(e.item_id) if e.item_id is not None else None
            plan = self.strategy.plan(planning[e.user_id], e, title=title, item_vector_known=e.item_id in item_vectors)
            planning[e.user_id] = plan.state
            plans.append(plan)
        return plans

    def _blend(self, requests: Sequence[SignalRequest]) -> list[tuple[list[tuple[str, float]], str | None]]:
        k, depth = self.config.k, self.config.depth
        per_signal: list[tuple[WeightedSignal, list[dict[str, float]]]] = []
        found = [0] * len(requests)  # candidates of the non-prior signals so far, per event
        for ws in self.signals:
            if ws.when_thin:
                asked = [i for i, r in enumerate(requests) if found[i] < depth or r.event.type is EventType.SEARCH]
                got = ws.signal.candidates([requests[i] for i in asked], depth) if asked else []
                lists: list[dict[str, float]] = [{} for _ in requests]
                for i, scores in zip(asked, got, strict=True):
                    lists[i] = scores
            else:
                lists = ws.signal.candidates(requests, depth)
            if not ws.prior:
                for i, scores in enumerate(lists):
                    found[i] += len(scores)
            per_signal.append((ws, lists))
        informing = [lists for ws, lists in per_signal if not ws.prior]  # "informed": proposed by a non-prior signal
        out: list[tuple[list[tuple[str, float]], str | None]] = []
        for i, req in enumerate(requests):
            total: dict[str, float] | None = None
            for ws, lists in per_signal:
                scores = lists[i]
                top = max(scores.values(), default=0.0)
                if top <= 0:
                    continue
                scale = ws.weight / top
                if total is None:  # the first signal with scores: no sums yet (the same floats: 0.0 + x == x)
                    total = {j: s * scale for j, s in scores.items()}
                    continue
                get = total.get
                for j, s in scores.items():
                    total[j] = get(j, 0.0) + s * scale
            ranked = _top_allowed(total or {}, k, req)
            if len(ranked) < k:
                ranked += self._fill(req, {j for j, _ in ranked}, k - len(ranked))
            fallback = None
            if not any(lists[i].get(j, 0.0) > 0 for j, _ in ranked for lists in informing):
                fallback = "no_session_vector" if req.query is None else "no_neighbours"
            out.append(([(j, round(float(s), 5)) for j, s in ranked], fallback))
        return out

    def _fill(self, req: SignalRequest, taken: set[str], n: int) -> list[tuple[str, float]]:
        """Catalogue items (a fixed pseudo-random direction's neighbours) when every signal ran dry."""
        exclude = set(req.exclude) | taken
        want = min(len(self.index), n + len(exclude) + 8)
        if want <= 0:
            return []
        try:
            (hits,) = self.index.search(self._filler[None, :], want, exclude=[exclude])
        except RuntimeError:
            return []
        ids = [j for j in hits.ids if j not in exclude]
        consumed = req.state.consumed.contains_many(ids)
        return [(j, 0.0) for j, c in zip(ids, consumed, strict=True) if not c][:n]

    def _item_vectors(self, ids: set[str]) -> dict[str, Vector]:
        known = [i for i in ids if i in self.index]
        if not known:
            return {}
        try:
            vectors = self.index.get(known)
        except UnknownItemError:  # deleted between the check and the get: fetch one by one
            out: dict[str, Vector] = {}
            for i in known:
                try:
                    out[i] = self.index.get([i])[0]
                except UnknownItemError:
                    continue
            return out
        return dict(zip(known, vectors, strict=True))


def _top_allowed(total: dict[str, float], k: int, req: SignalRequest) -> list[tuple[str, float]]:
    """The ``k`` best of ``total`` outside the exclusions; hashes only the few candidates near the top."""
    want = k + 16
    while True:
        # sorted(...)[:want] is heapq.nlargest(want, ...) (same items, ties too), ~2x faster at these sizes
        best = sorted(sorted(total.items(), key=itemgetter(1), reverse=True)[:want], key=lambda kv: (-kv[1], kv[0]))
        ids = [j for j, _ in best if j not in req.exclude]
        consumed = req.state.consumed.contains_many(ids)
        allowed = {j for j, c in zip(ids, consumed, strict=True) if not c}
        ranked = [(j, s) for j, s in best if j in allowed][:k]
        if len(ranked) >= k or len(best) >= len(total):
            return ranked
        want *= 4


def _unit(v: npt.NDArray[np.float64]) -> Vector:
    out: Vector = np.asarray(v, dtype=np.float32)
    return out / np.float32(np.linalg.norm(out))
