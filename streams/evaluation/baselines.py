"""The simple causal baselines a recommender has to beat, each in its strongest simple form.

Every baseline is learned online from ALL users' events in log order: the list after event t knows events
1..t (the user's own event t included) and nothing later. Every one applies the same exclusions as the
strategies -- an item the user consumed (an event of one of ``consumed_types``: by default every type that
names an item, as ``SessionConfig.consumed_types``) is never recommended to that user again -- and recommends
only available catalogue items. Where a baseline has fewer than K items with a
score, or ties, plain popularity decides (that makes it stronger, never weaker).

* ``popularity`` -- plain causal counts: how many events so far named the item.
* ``popularity_decayed`` -- the same counts, each decayed with a half-life (``half_life_s``) of event time.
* ``transition`` -- last-item transition: ``T[a][b]`` counts how often any user's item event ``b`` directly
  followed their item event ``a``; the user's last item ``a`` ranks candidates by ``T[a][.]``.
* ``cooccurrence`` -- co-occurrence in the user's recent items: ``C[a][b]`` counts how often ``a`` and ``b``
  were within ``window`` item events of each other in one user's history (each new item event ``b`` adds 1 to
  ``C[a][b]`` and ``C[b][a]`` for the user's previous ``window`` items ``a``); candidates are ranked by
  ``sum of C[a][.]`` over the user's last ``window`` items.

Cost: popularity O(1) per event to learn; transition O(1); co-occurrence O(window). Ranking is one pass over
the catalogue (numpy) plus the user's exclusions. Memory: the co-occurrence rows hold at most
``2 * window * events`` entries, in practice far fewer (repeated pairs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamrec.streams.evaluation.scoring import names_item
from streamrec.streams.schemas import Event, EventType

__all__ = [
    "BASELINES",
    "Baseline",
    "CoOccurrence",
    "DecayedPopularity",
    "ItemSpace",
    "Popularity",
    "Transition",
    "make_baseline",
    "top_k",
]

BASELINES = ("popularity", "popularity_decayed", "transition", "cooccurrence")
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
_ITEM_TYPES = frozenset(t for t in EventType if t is not EventType.SEARCH)


@dataclass(frozen=True)
class ItemSpace:
    """Dense integer ids for every item of a log (the catalogue first, then items only events name), and which
    of them may be recommended (available catalogue items)."""

    ids: tuple[str, ...]
    index: dict[str, int]
    recommendable: npt.NDArray[np.bool_]

    @classmethod
    def build(cls, catalogue: Sequence[str], event_items: Iterable[str]) -> ItemSpace:
        ids = list(dict.fromkeys(catalogue))
        n_catalogue = len(ids)
        known = set(ids)
        ids.extend(dict.fromkeys(i for i in event_items if i not in known))
        index = {item: i for i, item in enumerate(ids)}
        recommendable = np.zeros(len(ids), dtype=bool)
        recommendable[:n_catalogue] = True
        return cls(tuple(ids), index, recommendable)

    def __len__(self) -> int:
        return len(self.ids)


def top_k(scores: Floats, k: int) -> Ints:
    """Indices of the ``k`` highest finite scores, best first; ties go to the lower index (deterministic)."""
    n = len(scores)
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        kth = scores[np.argpartition(-scores, k - 1)[:k]].min()
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    return order[np.isfinite(scores[order])].astype(np.int64)


class Baseline:
    """Shared bookkeeping: plain counts (also the tie-break), per-user history and exclusions, the ranking."""

    name = "baseline"

    def __init__(self, space: ItemSpace, k: int, consumed_types: frozenset[EventType] | None = None) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.space = space
        self.k = k
        self.consumed_types = consumed_types if consumed_types is not None else _ITEM_TYPES
        self.counts = np.zeros(len(space))
        self.total = 0
        self.history: dict[str, list[int]] = {}  # user -> item indices, oldest first
        self.consumed: dict[str, set[int]] = {}
        self._mask = np.where(space.recommendable, 0.0, -np.inf)

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        """The list after each event of ``batch`` (log order), learning from each event first."""
        out = []
        for e in batch:
            if names_item(e):
                assert e.item_id is not None
                item = self.space.index[e.item_id]
                history = self.history.setdefault(e.user_id, [])
                self.learn(e, item, history)
                self.counts[item] += 1.0
                self.total += 1
                history.append(item)
                if e.type in self.consumed_types:
                    self.consumed.setdefault(e.user_id, set()).add(item)
            out.append(self.rank(e.user_id))
        return out

    def learn(self, event: Event, item: int, history: list[int]) -> None:
        """Learn from ``event`` naming ``item``; ``history`` is the user's items BEFORE it."""

    def scores(self, user_id: str) -> Floats:
        """Score of every item for ``user_id`` now (may be a shared array: it is copied before masking)."""
        return self.counts

    def popularity_tiebreak(self) -> Floats:
        """Plain counts scaled into [0, 1): added to integer counts, it orders only their ties (ties of the
        counts and of this go to the catalogue order)."""
        return self.counts / (self.total + 1.0)

    def rank(self, user_id: str) -> list[str]:
        s = self.scores(user_id) + self._mask
        consumed = self.consumed.get(user_id)
        if consumed:
            s[np.fromiter(consumed, dtype=np.int64, count=len(consumed))] = -np.inf
        return [self.space.ids[i] for i in top_k(s, self.k)]


class Popularity(Baseline):
    name = "popularity"


class DecayedPopularity(Baseline):
    """Counts decayed with ``half_life_s`` of event time, kept in forward form (``2 ** ((t - t0) / h)`` per
    event; rebased before it overflows), so the order is exact and adding is O(1)."""

    name = "popularity_decayed"

    def __init__(
        self,
        space: ItemSpace,
        k: int,
        half_life_s: float = 86_400.0,
        consumed_types: frozenset[EventType] | None = None,
    ) -> None:
        super().__init__(space, k, consumed_types)
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise ValueError("half_life_s must be > 0")
        self.half_life_s = half_life_s
        self.decayed = np.zeros(len(space))
        self._t0: float | None = None

    def learn(self, event: Event, item: int, history: list[int]) -> None:
        t = event.ts_ms / 1000.0
        if self._t0 is None:
            self._t0 = t
        exponent = (t - self._t0) / self.half_life_s
        if exponent > 500.0:
            self.decayed *= 2.0**-exponent
            self._t0, exponent = t, 0.0
        self.decayed[item] += 2.0**exponent

    def scores(self, user_id: str) -> Floats:
        return self.decayed


class Transition(Baseline):
    name = "transition"

    def __init__(self, space: ItemSpace, k: int, consumed_types: frozenset[EventType] | None = None) -> None:
        super().__init__(space, k, consumed_types)
        self.rows: dict[int, dict[int, float]] = {}

    def learn(self, event: Event, item: int, history: list[int]) -> None:
        if history:
            row = self.rows.setdefault(history[-1], {})
            row[item] = row.get(item, 0.0) + 1.0

    def scores(self, user_id: str) -> Floats:
        history = self.history.get(user_id)
        row = self.rows.get(history[-1]) if history else None
        counts = np.zeros(len(self.counts))
        if row:
            keys = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            counts[keys] = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        return counts + self.popularity_tiebreak()


class CoOccurrence(Baseline):
    """Rows are a dense matrix when the item space is small enough (``dense_max_items``; the ranking is then a
    sum of ``window`` rows), else dicts per item (same counts, same results)."""

    name = "cooccurrence"

    def __init__(
        self,
        space: ItemSpace,
        k: int,
        window: int = 20,
        dense_max_items: int = 4096,
        consumed_types: frozenset[EventType] | None = None,
    ) -> None:
        super().__init__(space, k, consumed_types)
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.dense: Floats | None = np.zeros((len(space), len(space))) if len(space) <= dense_max_items else None
        self.rows: dict[int, dict[int, float]] = {}

    def learn(self, event: Event, item: int, history: list[int]) -> None:
        others = [o for o in history[-self.window :] if o != item]
        if self.dense is not None:
            for other in others:  # one at a time: a repeated item adds once per occurrence
                self.dense[other, item] += 1.0
                self.dense[item, other] += 1.0
            return
        mine = self.rows.setdefault(item, {})
        for other in others:
            row = self.rows.setdefault(other, {})
            row[item] = row.get(item, 0.0) + 1.0
            mine[other] = mine.get(other, 0.0) + 1.0

    def scores(self, user_id: str) -> Floats:
        recent = self.history.get(user_id, [])[-self.window :]
        counts = np.zeros(len(self.counts))
        if self.dense is not None:
            for i in recent:
                counts += self.dense[i]
        else:
            rows = [r for i in recent if (r := self.rows.get(i))]
            if rows:
                keys = np.concatenate([np.fromiter(r.keys(), dtype=np.int64, count=len(r)) for r in rows])
                values = np.concatenate([np.fromiter(r.values(), dtype=np.float64, count=len(r)) for r in rows])
                counts = np.bincount(keys, weights=values, minlength=len(counts)).astype(np.float64)
        return counts + self.popularity_tiebreak()  # integer sums first: both layouts give the same floats


def make_baseline(
    name: str,
    space: ItemSpace,
    k: int,
    *,
    half_life_s: float = 86_400.0,
    window: int = 20,
    consumed_types: frozenset[EventType] | None = None,
) -> Baseline:
    """A baseline by name (one of :data:`BASELINES`)."""
    if name == "popularity":
        return Popularity(space, k, consumed_types)
    if name == "popularity_decayed":
        return DecayedPopularity(space, k, half_life_s=half_life_s, consumed_types=consumed_types)
    if name == "transition":
        return Transition(space, k, consumed_types)
    if name == "cooccurrence":
        return CoOccurrence(space, k, window=window, consumed_types=consumed_types)
    raise ValueError(f"unknown baseline {name!r} (one of {', '.join(BASELINES)})")
