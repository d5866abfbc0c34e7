"""The collaborative signal: an item-to-item co-visitation graph learned online from the events.

Learning rule (Amazon item-to-item / session-kNN style)
------------------------------------------------------
For an event on item x at time t, and the user's previous distinct items y_1, y_2, ... (most recent first,
from the session state, before this event):

    n[x]      += w                                  (x's interaction weight)
    c[y_d][x] += w / d           for d = 1 .. window (20)   (forward: "after y_d, people chose x")
    c[x][y_d] += b * w / d                          (backward, b = ``backward_weight``, 0.5)
    t[y_1][x] += w                                  (direct successor: the transition)

so the next item (d = 1) is the strongest pair and older context counts less (1/d, the harmonic position
weighting of session-kNN). A pair is learned once per visit, not once per event: when x is already among the
user's previous items (a repeated click, a view then an add-to-cart of the same item, a return to it), it is
paired only with the items visited since its last visit -- its pairs with the items before that were learned
then (on a sample of YOOCHOOSE's clicks, where a fifth of the events repeat the user's last item and 7 % return
to an earlier one, re-learning them cost 0.9 % HR@10; README "Recommendation quality").

``w`` is 1 for every item event (``type_weighted=False``, the default: the evaluation target is the user's next
item event of any type, and on MovieLens the type weights of the session -- purchase 6, view 1 -- cost 3.5 %
HR@10: they make a few heavy pairs dominate each row); with ``type_weighted`` it is the event type's session
weight. All counts decay exponentially with the EVENT time (``half_life_s``, a year; event time, not wall time,
so a replay learns what the live stream would have): the evidence of one pair is sparse, so it is kept for a
seasonal cycle, not a week. A short half-life erases the graph of a log whose users come rarely: on MovieLens'
``ml-latest-small`` (100,836 ratings over 22 years, ~5,000 a year) 90 days scored HR@10 0.1118, 180 days
0.1219, a year 0.1290, 2 / 4 / 10 years 0.1324 / 0.1318 / 0.1270; on MovieLens-100K (7 months) and a YOOCHOOSE
clicks sample (7 days) 90 days and a year score the same (30 days cost 1.5-2 % on MovieLens-100K). Forgetting
what stops recurring is also the bounded rows' job (below), so the decay need not be fast.

Each row keeps at most ``keep`` (default ``4 * neighbours``) entries while it is being updated (cut to half when it
overflows) and publishes the ``neighbours`` largest: memory is bounded by items x neighbours (the owner's working
rows: items x keep). The working room is larger than what is published for the reason heavy-hitter sketches
(Space-Saving, lossy counting) keep more counters than they report: a pair that will be strong arrives as a weak
one, and a row cut too often drops it before it grows. On MovieLens-100K (published rows of 100): room for 2x / 3x /
4x / 8x the published neighbours scored HR@10 0.2015 / 0.2028 / 0.2034 / 0.2034 -- it stops improving at 4x, which
is the default.

Serving rule
------------
For a user whose recent distinct items are i_0 (most recent), i_1, ... the collaborative score of a
candidate j is

    score(j) = sum_p  r(p) * e_p[i_p][j] / (n[i_p] ** a * n[j] ** damping)     a = ``source_norm``
    e_0      = c + tau * t,  e_p = c for p > 0             tau = ``transition_weight`` (0.5)
    r(p)     = 0.5 ** (p / position_half_life)        for p < sources

With a = 1, ``damping`` = 0 it is the conditional probability P(j | i); a = d = 0.5 the cosine; larger
``damping`` favours rarer items. Defaults a = 0.5, d = 0.2: a source's evidence grows with the square
root of its count, and candidates are damped a little (popular items are popular for a reason, but raw
counts would recommend the charts). The user's last item also votes with its direct successors (``tau``):
what shoppers did right after it. Only the ``per_source`` strongest neighbours of each source are read,
so a user costs at most ``sources x per_source`` array entries. The defaults were chosen by measurement
(``streamrec evaluate``, README "Recommendation quality"): each is a principle (direction, recency,
normalisation), set where MovieLens-100K stops improving, not at its optimum on that one dataset.

Where the graph lives (see :mod:`streamrec.streams.covisit_sync`): offline (``streamrec evaluate``,
benchmarks) one :class:`CovisitGraph` learns synchronously (``apply``); in the workers the deltas go
through Kafka, the owner of each item's partition merges them and publishes the row to a compacted topic
that every worker replicates into its own :class:`CovisitGraph` (``put_row``).

Thread safety: see :class:`CovisitGraph` (writers lock; the one reading thread does not).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.errors import ConfigError, StreamrecError

__all__ = [
    "CovisitConfig",
    "CovisitDelta",
    "CovisitGraph",
    "CovisitRow",
    "CovisitRowError",
    "DeltaBatch",
    "fetch_for",
    "pick",
]

log = logging.getLogger(__name__)
_REBASE_HALF_LIVES = 16.0  # a row's reference time moves forward once it is this many half-lives old
_EMPTY: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]] = (
    np.empty(0, np.int64),
    np.empty(0, np.float64),
    np.empty(0, np.float64),
)


KEEP_FACTOR = 4  # a learning row's room, in published neighbours (module docstring)
_NO_F32: npt.NDArray[np.float32] = np.empty(0, np.float32)
_NO_IDS: npt.NDArray[np.int64] = np.empty(0, np.int64)
_NO_F64: npt.NDArray[np.float64] = np.empty(0, np.float64)


class CovisitRowError(StreamrecError):
    """A published row that cannot be read back."""


@dataclass(frozen=True, slots=True)
class CovisitConfig:
    """How the co-visitation graph learns and serves (module docstring)."""

    window: int = 20  # learning: pair each item with the user's last `window` distinct items
    backward_weight: float = 0.5  # learning: weight of (new -> earlier) relative to (earlier -> new)
    type_weighted: bool = False  # learning: pairs weigh the event type's weight (False: every item event 1)
    half_life_s: float = 365 * 86400.0  # decay of counts, event time (a year: module docstring)
    neighbours: int = 100  # published neighbours per item
    keep: int = 0  # learning: entries a row keeps while it is updated (0: KEEP_FACTOR x neighbours)
    sources: int = 12  # serving: the user's last `sources` distinct items
    position_half_life: float = 4.0  # serving: weight 0.5 at this many items back
    per_source: int = 100  # serving: neighbours read per source item
    damping: float = 0.2  # serving: popularity damping exponent of the candidate
    source_norm: float | None = 0.5  # serving: exponent of the source's weight (None: 1 - damping)
    transition_weight: float = 0.5  # serving: extra weight of the last item's direct successors t[i_0][j]

    def __post_init__(self) -> None:
        for name in ("window", "neighbours", "sources", "per_source", "keep"):
            if getattr(self, name) < 0:
                raise ConfigError(f"covisit {name} must be >= 0")
        for name in ("half_life_s", "position_half_life"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"covisit {name} must be a positive number")
        if not 0.0 <= self.damping <= 1.0:
            raise ConfigError(f"covisit damping must be in [0, 1], not {self.damping}")
        if self.source_norm is not None and not 0.0 <= self.source_norm <= 1.0:
            raise ConfigError(f"covisit source_norm must be in [0, 1], not {self.source_norm}")
        if self.keep and self.keep < self.neighbours:
            raise ConfigError(f"covisit keep ({self.keep}) must be 0 or >= neighbours ({self.neighbours})")
        for name in ("backward_weight", "transition_weight"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"covisit {name} must be >= 0, not {v}")

    @property
    def working_room(self) -> int:
        """Entries a row keeps while it learns (cut to half, never below ``neighbours``, when it overflows)."""
        return self.keep or KEEP_FACTOR * self.neighbours

    @property
    def source_exponent(self) -> float:
        return 1.0 - self.damping if self.source_norm is None else self.source_norm


@dataclass(slots=True)
class CovisitDelta:
    """Increments of one item's row: ``n`` to its weight, ``pairs[j]`` to c[item][j], ``nexts[j]`` to t[item][j]
    (j directly followed the item); values at ``ts_s``."""

    item: str
    ts_s: float
    n: float = 0.0
    pairs: dict[str, float] = field(default_factory=dict)
    nexts: dict[str, float] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        """The JSON form of format 1 (written by earlier versions, still read; it has no ``nexts``);
        ``pairs`` flattened to [j1, w1, j2, w2, ...]."""
        flat: list[str | float] = []
        for j, w in self.pairs.items():
            flat += (j, w)
        return {"item": self.item, "ts": self.ts_s, "n": self.n, "pairs": flat}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CovisitDelta:
        flat = doc["pairs"]
        if len(flat) % 2:
            raise ValueError("covisit delta pairs must alternate item ids and weights")
        pairs = {str(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
        return cls(str(doc["item"]), float(doc["ts"]), float(doc["n"]), pairs)


class DeltaBatch:
    """Collects the deltas of a batch of events, one :class:`CovisitDelta` per touched row.

    Every row of a batch is valued at ONE reference time (the first event's; an event's weight is grown or
    decayed to it once), so learning an event costs one power, not one per pair, and no row is re-valued."""

    def __init__(self, config: CovisitConfig) -> None:
        self.config = config
        self.rows: dict[str, CovisitDelta] = {}
        self.ref_s: float | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def observe(self, item: str, weight: float, ts_s: float, previous: Sequence[str]) -> None:
        """Event on ``item`` (type weight ``weight``) after the user's ``previous`` items (most recent first)."""
        if weight <= 0:
            return
        hl = self.config.half_life_s
        ref = self.ref_s
        if ref is None:
            ref = self.ref_s = ts_s
        elif abs(ts_s - ref) > _REBASE_HALF_LIVES * hl:  # a batch spanning many half-lives: re-value it at ts_s
            self._rebase(ts_s)
            ref = ts_s
        w0 = weight if ts_s == ref else weight * _shift(ts_s, ref, hl)
        rows = self.rows
        own = rows.get(item)
        if own is None:
            own = rows[item] = CovisitDelta(item, ref)
        own.n += w0
        back = self.config.backward_weight
        window = self.config.window
        for d, y in enumerate(previous, start=1):
            if y == item or d > window:  # y == item: its previous visit, where its earlier pairs were learned
                break
            w = w0 / d
            row = rows.get(y)
            if row is None:
                row = rows[y] = CovisitDelta(y, ref)
            row.pairs[item] = row.pairs.get(item, 0.0) + w
            if d == 1:  # the direct successor of the user's previous item
                row.nexts[item] = row.nexts.get(item, 0.0) + w
            if back > 0:
                own.pairs[y] = own.pairs.get(y, 0.0) + back * w

    def _rebase(self, ts_s: float) -> None:
        assert self.ref_s is not None
        f = _shift(self.ref_s, ts_s, self.config.half_life_s)
        for row in self.rows.values():
            row.n *= f
            row.pairs = {j: w * f for j, w in row.pairs.items()}
            row.nexts = {j: w * f for j, w in row.nexts.items()}
            row.ts_s = ts_s
        self.ref_s = ts_s

    def deltas(self) -> list[CovisitDelta]:
        return list(self.rows.values())


def _shift(t_from: float, t_to: float, half_life_s: float) -> float:
    """The factor that turns a value at ``t_from`` into its decayed value at ``t_to``."""
    return float(0.5 ** ((t_to - t_from) / half_life_s))


@dataclass(frozen=True, slots=True)
class CovisitRow:
    """One item's published row: weight ``n``, neighbour counts ``weights`` (best first) and their direct-successor
    counts ``nexts`` (aligned with ``ids``; empty: none), valued at ``ref_s``; ``version`` orders the writes of a
    row (the replica keeps the highest)."""

    item: str
    n: float
    ref_s: float
    ids: tuple[str, ...]
    weights: tuple[float, ...]
    version: int
    nexts: tuple[float, ...] = ()

    def to_json_bytes(self) -> bytes:
        """The JSON form of format 1 (written by earlier versions, still read; it has no ``nexts``)."""
        doc = {
            "v": 1,
            "item": self.item,
            "n": self.n,
            "ref": self.ref_s,
            "ver": self.version,
            "ids": list(self.ids),
            "w": [round(w, 6) for w in self.weights],
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> CovisitRow:
        try:
            doc = json.loads(data.decode("utf-8"))
            if doc.get("v") != 1:
                raise CovisitRowError(f"covisit row format {doc.get('v')!r} is not 1")
            ids = tuple(str(i) for i in doc["ids"])
            weights = tuple(float(w) for w in doc["w"])
            if len(ids) != len(weights):
                raise CovisitRowError("covisit row has different numbers of ids and weights")
            n, ref = float(doc["n"]), float(doc["ref"])
            if not (math.isfinite(n) and math.isfinite(ref) and all(math.isfinite(w) for w in weights)):
                raise CovisitRowError("covisit row holds a non-finite number")
            return cls(str(doc["item"]), n, ref, ids, weights, int(doc["ver"]))
        except CovisitRowError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CovisitRowError(f"corrupt covisit row ({exc!r})") from None


class _Row:
    """A row: values at ``ref_s``; ``top`` caches the best ``per_source`` normalised neighbours.

    Two forms. A working row (``apply``: offline, or an owner's) holds dicts ``nbrs``/``nxt`` that merge in place.
    A published row (``put_rows``: every replica) is read-only and compact: ``ids`` (interned neighbour ids,
    int32), ``w`` and ``t`` (float32 counts and direct-successor counts) -- 12 bytes a neighbour instead of
    ~70 in dicts, which matters because every worker holds every published row."""

    __slots__ = ("ids", "n", "nbrs", "nxt", "raw", "ref_s", "t", "top", "version", "w")

    def __init__(self, ref_s: float) -> None:
        self.n = 0.0
        self.nbrs: dict[str, float] = {}
        self.nxt: dict[str, float] = {}  # direct-successor counts, keys a subset of nbrs
        self.ids: npt.NDArray[np.int32] | None = None  # published form (then nbrs/nxt are empty)
        self.raw: bytes | None = None  # a published row not decoded yet (``put_raw``): only n, ref_s, version set
        self.w: npt.NDArray[np.float32] = _NO_F32
        self.t: npt.NDArray[np.float32] = _NO_F32
        self.ref_s = ref_s
        # cached (neighbour ids, normalised scores, normalised scores as the user's LAST item) -- see _scores
        self.top: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        self.version = 0

    def __len__(self) -> int:
        return len(self.nbrs) if self.ids is None else len(self.ids)


class CovisitGraph:
    """Rows of the co-visitation graph, updated by ``apply`` (deltas) or ``put_rows`` (published rows).

    Thread safety: writers (``apply``, ``put_rows``, ``put_raw``, ``remove``, ``row``) serialise on a lock.
    Readers (``scores``) take no lock: ``put_rows``/``put_raw`` never change a row in place, they swap whole row
    objects in the dict (atomic under the GIL), so a reader sees the old row or the new one; the per-row score
    cache is written by the reading thread only -- ONE reading thread at a time (the hot path). A row stored
    undecoded (``put_raw``) is decoded by the reader that first needs it, into a new row object swapped in under
    the lock only if the dict still holds the undecoded one (a newer row is never overwritten). ``apply`` changes
    rows in place: use it only on a graph no other thread reads (offline, or an owner's private working rows)."""

    def __init__(self, config: CovisitConfig | None = None) -> None:
        self.config = config or CovisitConfig()
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._ids: list[str] = []  # interned item ids of neighbours (grows with the items ever named in a row)
        self._pos: dict[str, int] = {}
        self._intern_lock = threading.Lock()  # put_rows (the replica's thread) and the reader both intern
        # (weight n, reference time) of each interned item's row (0 weight: none): the normalisation reads its
        # neighbours' weights from here in one vectorised step; replaced whole when it grows (readers hold a copy)
        self._nref = np.zeros((256, 2), np.float64)
        self._scratch = threading.local()  # per reading thread: see _sum_by_id
        self.invalid_rows = 0  # rows stored undecoded (put_raw) that did not decode when read
        self.on_invalid: Callable[[], object] | None = None  # called for each of them (the worker's metric)
        self._position_weights = tuple(0.5 ** (p / self.config.position_half_life) for p in range(self.config.sources))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item: object) -> bool:
        return item in self._rows

    # ------------------------------------------------------------------ writes
    def apply(self, deltas: Iterable[CovisitDelta], version: int | None = None) -> list[str]:
        """Merge deltas into their rows; returns the items changed. ``version`` (>= 1): the deltas' source
        offset + 1 -- a row already at or past it skips them (a re-delivered delta message is applied once);
        None: always apply and count versions up by one (offline use)."""
        changed: list[str] = []
        cfg = self.config
        hl = cfg.half_life_s
        cap = cfg.working_room
        with self._lock:
            for d in deltas:
                row = self._rows.get(d.item)
                if row is None:
                    row = self._rows[d.item] = _Row(d.ts_s)
                if version is not None and row.version >= version:
                    continue
                if row.raw is not None:
                    row = self._rows[d.item] = self._decoded(d.item, row)
                if row.ids is not None:  # a published row (an owner seeded from its replica): make it mergeable
                    self._materialise(row)
                if d.ts_s - row.ref_s > _REBASE_HALF_LIVES * hl:
                    self._rebase(row, d.ts_s, hl)
                f = _shift(d.ts_s, row.ref_s, hl)
                row.n += d.n * f
                nbrs = row.nbrs
                for j, w in d.pairs.items():
                    nbrs[j] = nbrs.get(j, 0.0) + w * f
                nxt = row.nxt
                for j, w in d.nexts.items():
                    nxt[j] = nxt.get(j, 0.0) + w * f
                if len(nbrs) > cap:
                    keep = max(cfg.neighbours, cap // 2)  # sorted()[:n] = heapq.nlargest, faster at this size
                    row.nbrs = nbrs = dict(sorted(nbrs.items(), key=_value, reverse=True)[:keep])
                    row.nxt = {j: t for j, t in nxt.items() if j in nbrs}
                row.top = None
                row.version = row.version + 1 if version is None else version
                changed.append(d.item)
                self._note(d.item, row)
        return changed

    def put_raw(self, rows: Iterable[tuple[str, float, float, int, bytes]]) -> int:
        """Published rows as they came off the wire, ``(item, n, ref_s, version, message)`` (see
        :func:`~streamrec.streams.covisit_wire.peek_row`). A row whose previous version was served (its score cache
        is filled) is decoded now, in the calling (replica's) thread, as ``put_rows`` would; any other is stored
        undecoded and decoded (and fully validated) when it is first read -- so a row that nobody serves before
        its next version arrives, most of a large catalogue's, costs a header read. Same versioning as
        ``put_rows``; returns how many applied."""
        held = self._rows
        built: list[tuple[str, _Row]] = []
        for item, n, ref_s, version, raw in rows:  # decode outside the lock
            mine = held.get(item)
            if mine is not None and mine.version >= version:
                continue
            new = _Row(ref_s)
            new.n, new.version, new.raw = n, version, raw
            if mine is not None and mine.top is not None:  # served since its last version: likely again soon
                new = self._decoded(item, new)
            built.append((item, new))
        applied = 0
        with self._lock:
            for item, new in built:
                mine = held.get(item)
                if mine is None or mine.version < new.version:
                    held[item] = new
                    self._note(item, new)
                    applied += 1
        return applied

    def _decoded(self, item: str, row: _Row) -> _Row:
        """The published (compact) form of an undecoded row; a row that does not decode serves no neighbours
        (counted in ``invalid_rows``, logged)."""
        from streamrec.streams.covisit_wire import decode_row_arrays  # the wire format imports this module

        assert row.raw is not None
        new = _Row(row.ref_s)
        new.n, new.version = row.n, row.version
        try:
            ids, new.w, nexts = decode_row_arrays(row.raw)
        except CovisitRowError as exc:
            self.invalid_rows += 1
            if self.on_invalid is not None:
                self.on_invalid()
            log.warning("covisit row of %r (version %d) does not decode, served empty: %s", item, row.version, exc)
            new.ids = np.empty(0, np.int32)
            return new
        new.ids = self._intern_many(ids)
        if nexts is not None:
            new.t = nexts
        return new

    def _decode_in_place(self, item: str, row: _Row) -> _Row:
        """Reader side: decode an undecoded row and swap the result in (unless a writer replaced it meanwhile)."""
        new = self._decoded(item, row)
        with self._lock:
            if self._rows.get(item) is row:
                self._rows[item] = new
        return new

    def put_row(self, row: CovisitRow) -> bool:
        """Replace a row by a published one unless ours is as new or newer; True if it was applied."""
        return self.put_rows([row]) == 1

    def put_rows(self, rows: Iterable[CovisitRow]) -> int:
        """``put_row`` for many rows under ONE lock acquisition (a reader waits once, not once per row: with the
        GIL, every hand-over of a contended lock can cost a thread switch interval); returns how many applied."""
        built = []
        for row in rows:  # build outside the lock
            new = _Row(row.ref_s)
            new.n = row.n
            new.ids = self._intern_many(row.ids)
            new.w = np.asarray(row.weights, dtype=np.float32)
            if row.nexts and any(row.nexts):
                new.t = np.asarray(row.nexts, dtype=np.float32)
            new.version = row.version
            built.append((row.item, new))
        applied = 0
        with self._lock:
            for item, new in built:
                mine = self._rows.get(item)
                if mine is None or mine.version < new.version:
                    self._rows[item] = new
                    self._note(item, new)
                    applied += 1
        return applied

    def version(self, item: str) -> int:
        """The version of the row held for ``item`` (0: none)."""
        row = self._rows.get(item)  # one dict read: atomic under the GIL, no lock needed
        return 0 if row is None else row.version

    def remove(self, item: str) -> None:
        with self._lock:
            if self._rows.pop(item, None) is not None:
                self._nref[self._pos[item], 0] = 0.0

    def row(self, item: str) -> CovisitRow | None:
        """The publishable form of a row: the ``neighbours`` largest counts, best first."""
        with self._lock:
            r = self._rows.get(item)
            if r is None:
                return None
            if r.raw is not None:
                r = self._rows[item] = self._decoded(item, r)
            if r.ids is not None:  # a published row, as it was published
                names = self._ids
                ids = tuple(names[i] for i in r.ids.tolist())
                nexts = tuple(r.t.tolist()) if r.t.size else ()
                return CovisitRow(item, r.n, r.ref_s, ids, tuple(r.w.tolist()), r.version, nexts)
            # = heapq.nlargest (same order, ties included), which is slower for ~100 entries
            best = sorted(r.nbrs.items(), key=_value, reverse=True)[: self.config.neighbours]
            nexts = tuple(r.nxt.get(j, 0.0) for j, _ in best) if r.nxt else ()
            ids, weights = tuple(j for j, _ in best), tuple(w for _, w in best)
            return CovisitRow(item, r.n, r.ref_s, ids, weights, r.version, nexts)

    def _materialise(self, row: _Row) -> None:
        assert row.ids is not None
        names = [self._ids[i] for i in row.ids.tolist()]
        row.nbrs = dict(zip(names, row.w.tolist(), strict=True))
        row.nxt = {j: t for j, t in zip(names, row.t.tolist(), strict=False) if t} if row.t.size else {}
        row.ids, row.w, row.t = None, _NO_F32, _NO_F32

    @staticmethod
    def _rebase(row: _Row, ref_s: float, half_life_s: float) -> None:
        """Re-express the row's values at a later reference time (keeps the numbers in range)."""
        f = _shift(row.ref_s, ref_s, half_life_s)
        row.n *= f
        row.nbrs = {j: w * f for j, w in row.nbrs.items() if w * f > 1e-12}
        row.nxt = {j: w * f for j, w in row.nxt.items() if j in row.nbrs}
        row.ref_s = ref_s

    # ------------------------------------------------------------------ reads
    def scores_many(
        self, users: Sequence[tuple[Sequence[str], Collection[str]]], now_s: float, limit: int | None = None
    ) -> list[dict[str, float]]:
        """``scores`` for a batch of (recent items, exclusions). Lock-free (see the class docstring)."""
        return [self._scores(recent, now_s, limit, exclude) for recent, exclude in users]

    def scores(
        self, recent: Sequence[str], now_s: float, limit: int | None = None, exclude: Collection[str] = ()
    ) -> dict[str, float]:
        """See :meth:`_scores`. Lock-free (see the class docstring)."""
        return self._scores(recent, now_s, limit, exclude)

    def ranked_many(
        self, recents: Sequence[Sequence[str]], now_s: float, fetch: int
    ) -> list[tuple[list[str], list[float]]]:
        """For each user's recent items, the ``fetch`` best candidates, best first, with their scores and no
        exclusion applied: what :meth:`scores` filters (the owner process serves this to its worker, which applies
        the user's exclusions itself, :mod:`streamrec.streams.covisit_serve`). Lock-free, like ``scores``."""
        names = self._ids
        out: list[tuple[list[str], list[float]]] = []
        for recent in recents:
            uniq, sums = self._ranked(recent, now_s, fetch)
            out.append(([names[i] for i in uniq.tolist()], sums.tolist()))
        return out

    def _scores(
        self, recent: Sequence[str], now_s: float, limit: int | None = None, exclude: Collection[str] = ()
    ) -> dict[str, float]:
        """Collaborative scores of candidates for a user whose recent distinct items
        are ``recent`` (most recent first): the ``limit`` best (None: all) not in ``exclude``; see the module docstring.
        Exclusions are tested on an over-fetched top only (:func:`fetch_for`; a user excludes up to ~250 ids:
        mapping them all would cost more than the scoring); a user whose best candidates are mostly excluded gets
        fewer."""
        ids = self._ids
        if limit is None:
            uniq, sums = self._ranked(recent, now_s, None)
            return {ids[i]: s for i, s in zip(uniq.tolist(), sums.tolist(), strict=True) if ids[i] not in exclude}
        uniq, sums = self._ranked(recent, now_s, fetch_for(limit))
        return pick((ids[i] for i in uniq.tolist()), sums.tolist(), limit, exclude)  # names only as far as read

    def _ranked(
        self, recent: Sequence[str], now_s: float, fetch: int | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Interned ids and scores of the candidates of ``recent``: the ``fetch`` best, best first (ties in the
        order a stable sort gives), or all of them unordered (None).

        All counts of a score decay at the same rate, so c / (n_i ** (1 - d) * n_j ** d) does not change with
        time: each row caches its ``per_source`` best normalised neighbours (as arrays) when it is first read
        after a change (n_j as it was then). With ``source_norm`` + ``damping`` != 1 a score scales with
        (decay since the row's reference time) ** (1 - source_norm - damping), applied per source."""
        cfg = self.config
        drift = 1.0 - cfg.source_exponent - cfg.damping
        hl = cfg.half_life_s
        position = self._position_weights
        idx_parts: list[npt.NDArray[np.int64]] = []
        val_parts: list[npt.NDArray[np.float64]] = []
        scale: list[float] = []  # per part: the source's position weight (x its age factor)
        rows = self._rows
        for p, item in enumerate(recent[: cfg.sources]):
            row = rows.get(item)
            if row is None:
                continue
            top = row.top
            if top is None:
                if row.raw is not None:
                    row = self._decode_in_place(item, row)
                top = row.top = self._normalised_top(row)
            if top[0].size:
                r = position[p]
                if drift:  # exponents not summing to 1: the cached scores scale with the row's age
                    r *= _shift(row.ref_s, now_s, hl) ** drift
                idx_parts.append(top[0])
                val_parts.append(top[2] if p == 0 else top[1])
                scale.append(r)
        if not idx_parts:
            return _NO_IDS, _NO_F64
        if len(idx_parts) == 1:
            uniq, sums = idx_parts[0], val_parts[0] * scale[0]
        else:  # one multiply for all parts (each value scaled once: the same numbers as part by part)
            vals = np.concatenate(val_parts) * np.repeat(scale, [a.size for a in idx_parts])
            uniq, sums = self._sum_by_id(np.concatenate(idx_parts), vals, len(self._ids))
        if fetch is None:
            return uniq, sums
        if sums.size > fetch:
            keep = np.argpartition(-sums, fetch - 1)[:fetch]
            uniq, sums = uniq[keep], sums[keep]
        order = np.argsort(-sums, kind="stable")  # best first; ties in fetched order (as a stable sort)
        return uniq[order], sums[order]

    def _sum_by_id(
        self, idx: npt.NDArray[np.int64], vals: npt.NDArray[np.float64], universe: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The distinct ids of ``idx`` and the sum of their ``vals`` (in input order, as ``np.bincount``), without
        sorting (``np.unique`` sorted ~1,200 ids per user: ~3x slower): ``mark[id]`` is set to the entry's
        position, so each entry reads back the position of the id's representative (its last entry), and the
        sums are a bincount over those positions. ``mark``'s contents never need resetting; one per thread."""
        mark: npt.NDArray[np.intp] | None = getattr(self._scratch, "mark", None)
        if mark is None or mark.size < universe:
            mark = self._scratch.mark = np.empty(max(universe, 2 * (0 if mark is None else mark.size)), np.intp)
        pos = np.arange(idx.size)
        mark[idx] = pos
        rep = mark[idx]
        sums = np.bincount(rep, weights=vals, minlength=idx.size)
        first = rep == pos
        return idx[first], sums[first]

    def _normalised_top(
        self, row: _Row
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        cfg = self.config
        if row.n <= 0 or not len(row):
            return _EMPTY
        if row.ids is not None:  # published
            idx = row.ids.astype(np.int64)
            c = row.w.astype(np.float64)
            trans = row.t.astype(np.float64) if row.t.size else None
        else:
            if len(row.nbrs) > cfg.neighbours:  # a working row (offline, or an owner's): serve what it would publish
                keys = [j for j, _ in sorted(row.nbrs.items(), key=_value, reverse=True)[: cfg.neighbours]]
            else:
                keys = list(row.nbrs)
            idx = self._intern_many(keys).astype(np.int64)
            c = np.fromiter((row.nbrs[j] for j in keys), dtype=np.float64, count=len(keys))
            nxt = row.nxt
            trans = np.fromiter((nxt.get(j, 0.0) for j in keys), dtype=np.float64, count=len(keys)) if nxt else None
        other = self._nref[idx]  # the neighbours' (n, ref) -- the ids were interned before this row was stored
        with np.errstate(over="ignore"):  # a neighbour far newer than this row: +inf, its score 0, as before
            nj = other[:, 0] * np.exp2((other[:, 1] - row.ref_s) / cfg.half_life_s)  # n_j at this row's ref. time
        # nj < c only for items never seen as events themselves: their pair count is all we know
        norm = row.n**cfg.source_exponent * np.maximum(nj, c) ** cfg.damping
        scored = c / norm
        if scored.size > cfg.per_source:
            best = np.argpartition(-scored, cfg.per_source - 1)[: cfg.per_source]
        else:
            best = np.arange(scored.size)
        scored = scored[best]
        last = scored
        if trans is not None and cfg.transition_weight > 0:  # as the user's last item: + the direct successors
            last = scored + cfg.transition_weight * trans[best] / norm[best]
        return idx[best], scored, last

    def _intern_many(self, items: Sequence[str]) -> npt.NDArray[np.int32]:
        """Positions of ``items`` in the interned id list (appended if new)."""
        pos, ids = self._pos, self._ids
        with self._intern_lock:
            out = np.empty(len(items), np.int32)
            for k, item in enumerate(items):
                i = pos.get(item)
                if i is None:
                    i = pos[item] = len(ids)
                    ids.append(item)
                out[k] = i
            if len(ids) > len(self._nref):
                grown = np.zeros((max(2 * len(self._nref), len(ids)), 2), np.float64)
                grown[: len(self._nref)] = self._nref
                self._nref = grown
        return out

    def _note(self, item: str, row: _Row) -> None:
        """Record a stored row's weight and reference time for the normalisation of its neighbours' rows."""
        i = self._pos.get(item)
        if i is None:
            i = int(self._intern_many([item])[0])
        nref = self._nref
        nref[i, 0] = row.n
        nref[i, 1] = row.ref_s

    def _weight(self, item: str, now_s: float, hl: float) -> float:
        row = self._rows.get(item)
        return 0.0 if row is None else row.n * _shift(row.ref_s, now_s, hl)

    def weight(self, item: str, now_s: float) -> float:
        """The item's decayed interaction weight at ``now_s`` (0 if never seen)."""
        with self._lock:
            return self._weight(item, now_s, self.config.half_life_s)


def _value(kv: tuple[str, float]) -> float:
    return kv[1]


def fetch_for(limit: int) -> int:
    """How many ranked candidates a user's ``limit`` is picked from (the exclusions are tested on these only)."""
    return 2 * limit + 10


def pick(ids: Iterable[str], scores: Iterable[float], limit: int, exclude: Collection[str]) -> dict[str, float]:
    """The first ``limit`` of ranked ``ids`` (best first) not in ``exclude``, with their scores."""
    out: dict[str, float] = {}
    for j, s in zip(ids, scores, strict=True):
        if j not in exclude:
            out[j] = s
            if len(out) == limit:
                break
    return out
