"""The offline replay behind ``benchmarks/strategy_eval.py``: baselines, metrics, the replay loop. The recommender
under test is the worker's own core (:mod:`streamrec.streams.core`), never a copy of it.

No model, no MovieLens here: everything takes an encoder, an index and a list of events, so the unit tests run
it on a synthetic catalogue with a fake encoder.

Protocol (next-item prediction on a time-ordered replay):

* The stream is replayed in global time order in micro-batches of ``batch_size`` events, as the worker does.
* After each event the recommender answers top-K (exclusions: the user's purchased + recently seen items).
* An event is *evaluated* when the user has at least ``warmup`` item events so far (this one included) and at
  least one item event after it. Its targets are the user's next ``n_next`` items (fewer near the end).
* Per evaluated event: ``hit`` (next item in the top K), ``rr`` (1/rank of the next item, 0 if absent: MRR),
  ``recall`` (share of the next-N items in the top K), ``ndcg`` (binary-relevance NDCG@K of the next-N items).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamrec.encoders import TextEncoder
from streamrec.index import VectorIndex
from streamrec.streams.core import CoreConfig, RecommenderCore
from streamrec.streams.covisit import CovisitGraph
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import (
    DecayedMeanStrategy,
    SessionConfig,
    SessionState,
    SessionStrategy,
    exclusions,
)

Vector = npt.NDArray[np.float32]
METRICS = ("hit", "rr", "recall", "ndcg")


# ------------------------------------------------------------------------------------------ metrics
def score_list(recs: Sequence[str], targets: Sequence[str], k: int) -> dict[str, float]:
    """The four metrics of one top-K list against the next items ``targets`` (``targets[0]`` = next item)."""
    if not targets:
        raise ValueError("score_list needs at least one target")
    top = list(recs[:k])
    rank = {item: i for i, item in enumerate(top)}
    nxt = rank.get(targets[0])
    wanted = set(targets)
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(top) if item in wanted)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(wanted), k)))
    return {
        "hit": 0.0 if nxt is None else 1.0,
        "rr": 0.0 if nxt is None else 1.0 / (nxt + 1),
        "recall": len(wanted & set(top)) / len(wanted),
        "ndcg": dcg / idcg,
    }


# ------------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class EvalPoint:
    """One evaluated event: its index in the stream, its user and the user's next items."""

    position: int
    user_id: str
    targets: tuple[str, ...]


def eval_points(events: Sequence[Event], *, warmup: int, n_next: int) -> list[EvalPoint]:
    """The evaluated events of ``events`` (see the module docstring), in stream order."""
    items_of: dict[str, list[str]] = {}
    seen_at: list[int] = []  # per event: how many item events its user had so far (this one included)
    for e in events:
        items = items_of.setdefault(e.user_id, [])
        if e.item_id is not None and e.type is not EventType.SEARCH:
            items.append(e.item_id)
        seen_at.append(len(items))
    out = []
    for pos, (e, n) in enumerate(zip(events, seen_at, strict=True)):
        future = items_of[e.user_id][n : n + n_next]
        if n >= warmup and future:
            out.append(EvalPoint(pos, e.user_id, tuple(future)))
    return out


# ------------------------------------------------------------------------------------------ cost
@dataclass
class Cost:
    """Compute spent by a recommender, summed over the replay (seconds; counts)."""

    events: int = 0
    batches: int = 0
    plan_s: float = 0.0  # item vectors from the index + strategy.plan (+ bookkeeping for baselines)
    encode_s: float = 0.0
    apply_s: float = 0.0
    search_s: float = 0.0  # the batched index search (or the baseline's ranking) + any fallback
    encoder_calls: int = 0
    texts_requested: int = 0  # texts handed to the (cached) encoder
    fallbacks: int = 0

    def per_event(self) -> dict[str, float]:
        n = max(1, self.events)
        total = self.plan_s + self.encode_s + self.apply_s + self.search_s
        return {
            "total_us": total / n * 1e6,
            "plan_us": self.plan_s / n * 1e6,
            "encode_us": self.encode_s / n * 1e6,
            "apply_us": self.apply_s / n * 1e6,
            "search_us": self.search_s / n * 1e6,
            "encoder_calls": self.encoder_calls / n,
            "texts": self.texts_requested / n,
            "fallback_share": self.fallbacks / n,
        }


class Recommender(Protocol):
    cost: Cost

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        """Process ``batch`` (stream order) and return the top-K item ids after each event."""
        ...


# ------------------------------------------------------------------------------------------ recommenders
class StrategyRecommender:
    """The worker's own batch step (:class:`streamrec.streams.core.RecommenderCore`), fed synchronously: no copy
    of it here. ``covisit``: a co-visitation graph that learns after every batch (None: the session strategy and
    the popularity prior alone)."""

    def __init__(self, strategy: SessionStrategy, encoder: TextEncoder, index: VectorIndex,
                 titles: Mapping[str, str], k: int, popularity: RecentPopularity | None = None,
                 covisit: CovisitGraph | None = None, config: CoreConfig | None = None) -> None:
        self.core = RecommenderCore(
            encoder=encoder, index=index, titles=titles, strategy=strategy,
            popularity=popularity or RecentPopularity(half_life_s=strategy.config.half_life_s), covisit=covisit,
            config=config or CoreConfig(k=k),
        )
        self.states: dict[str, SessionState] = {}
        self.cost = Cost()

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        t0 = time.perf_counter()
        result = self.core.step(batch, {e.user_id: self.states.get(e.user_id) for e in batch})
        self.core.learn(result)
        self.states.update(result.states)
        total = time.perf_counter() - t0
        c = self.cost
        c.events += len(batch)
        c.batches += 1
        c.encode_s += result.encode_s
        c.search_s += result.index_s
        c.apply_s += max(0.0, total - result.encode_s - result.index_s)
        c.encoder_calls += 1 if result.texts_encoded else 0
        c.texts_requested += result.texts_encoded
        c.fallbacks += sum(1 for o in result.outcomes if o.fallback)
        return [[i for i, _ in o.items] for o in result.outcomes]


def _popular(pop: RecentPopularity, k: int, now_s: float, exclude: set[str], catalogue: Sequence[str]) -> list[str]:
    """Top-k recently popular items, topped up from the catalogue (in its order) when popularity is thin."""
    items = [i for i, _ in pop.top(k, now_s, exclude=exclude)]
    if len(items) < k:
        taken = exclude | set(items)
        items += [i for i in catalogue if i not in taken][: k - len(items)]
    return items


class _Bookkeeping:
    """Session bookkeeping only (recent/purchased lists for the exclusions), for the baselines."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._strategy = DecayedMeanStrategy(config=config)
        self.states: dict[str, SessionState] = {}

    def advance(self, e: Event) -> set[str]:
        plan = self._strategy.plan(self.states.get(e.user_id), e)
        self.states[e.user_id] = plan.state
        return exclusions(plan.state, self.config)


class PopularityRecommender:
    """Recent popularity (the worker's fallback) with the same exclusions. ``background``: time-ordered
    ``(ts_ms, item_id, weight)`` interactions of the whole population, added up to each event's time (the worker
    sees everyone's events); without it, only the replayed events count."""

    def __init__(self, config: SessionConfig, catalogue: Sequence[str], k: int,
                 background: Sequence[tuple[int, str, float]] | None = None) -> None:
        self.config = config
        self.catalogue = list(catalogue)
        self.k = k
        self.popularity = RecentPopularity(half_life_s=config.half_life_s)
        self.background = background
        self._next_bg = 0
        self._book = _Bookkeeping(config)
        self.cost = Cost()

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        t0 = time.perf_counter()
        out = []
        for e in batch:
            excl = self._book.advance(e)
            if self.background is None:
                if e.item_id is not None and e.type is not EventType.SEARCH:
                    self.popularity.add(e.item_id, self.config.weight_of(e.type), e.ts_ms / 1000)
            else:
                bg = self.background
                # strictly earlier ratings only: a user's same-second ratings must not leak into popularity
                while self._next_bg < len(bg) and bg[self._next_bg][0] < e.ts_ms:
                    ts, item, w = bg[self._next_bg]
                    self.popularity.add(item, w, ts / 1000)
                    self._next_bg += 1
            out.append(_popular(self.popularity, self.k, e.ts_ms / 1000, excl, self.catalogue))
        self.cost.events += len(batch)
        self.cost.batches += 1
        self.cost.search_s += time.perf_counter() - t0
        return out


class RandomRecommender:
    """K items drawn uniformly (seeded) from the catalogue minus the exclusions."""

    def __init__(self, config: SessionConfig, catalogue: Sequence[str], k: int, seed: int = 0) -> None:
        self.catalogue = list(catalogue)
        self.k = k
        self.rng = random.Random(seed)
        self._book = _Bookkeeping(config)
        self.cost = Cost()

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        t0 = time.perf_counter()
        out = []
        for e in batch:
            excl = self._book.advance(e)
            picks: list[str] = []
            while len(picks) < self.k and len(picks) + len(excl) < len(self.catalogue):
                item = self.catalogue[self.rng.randrange(len(self.catalogue))]
                if item not in excl and item not in picks:
                    picks.append(item)
            out.append(picks)
        self.cost.events += len(batch)
        self.cost.batches += 1
        self.cost.search_s += time.perf_counter() - t0
        return out


# ------------------------------------------------------------------------------------------ the replay
@dataclass
class RunResult:
    """Per evaluated point metric arrays (aligned with the ``EvalPoint`` list), coverage and cost."""

    metrics: dict[str, npt.NDArray[np.float64]]
    recommended: set[str] = field(default_factory=set)
    cost: Cost = field(default_factory=Cost)
    wall_s: float = 0.0

    def means(self) -> dict[str, float]:
        return {m: float(v.mean()) if v.size else float("nan") for m, v in self.metrics.items()}


def run_replay(rec: Recommender, events: Sequence[Event], points: Sequence[EvalPoint], *, k: int,
               batch_size: int) -> RunResult:
    """Replay ``events`` through ``rec`` in micro-batches and score the evaluated points."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    target_of = {p.position: p.targets for p in points}
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    recommended: set[str] = set()
    t0 = time.perf_counter()
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        lists = rec.recommend(batch)
        if len(lists) != len(batch):
            raise RuntimeError(f"recommender answered {len(lists)} lists for {len(batch)} events")
        for offset, recs in enumerate(lists):
            targets = target_of.get(start + offset)
            if targets is None:
                continue
            recommended.update(recs[:k])
            for m, v in score_list(recs, targets, k).items():
                values[m].append(v)
    wall = time.perf_counter() - t0
    return RunResult({m: np.asarray(v, dtype=np.float64) for m, v in values.items()}, recommended, rec.cost, wall)


def paired_bootstrap(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], groups: Sequence[str], *,
                     rounds: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95 % interval, resampling whole users (``groups``) since a user's events are
    correlated. ``a``, ``b``: per evaluated point, aligned."""
    diff = a - b
    users = sorted(set(groups))
    index = {u: i for i, u in enumerate(users)}
    g = np.fromiter((index[u] for u in groups), dtype=np.int64, count=len(groups))
    sums = np.bincount(g, weights=diff, minlength=len(users))
    counts = np.bincount(g, minlength=len(users)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(users), size=(rounds, len(users)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)
