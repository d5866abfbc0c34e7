"""The live HNSW catalogue: hnswlib behind string ids, a read/write lock, availability and atomic snapshots.

The decisions below were measured with ``python -m benchmarks.index_bench`` and ``benchmarks.scan_bench``;
the figures behind each, run by run, are in ``benchmarks/README.md`` ("The item index: why HnswIndex is built
this way").

- **M=16, ef_construction=200, ef=32**: the cheapest ef with a margin over recall@10 0.97 at 100k items on
  data harder than real text (0.996; MovieLens titles 0.987); exact numpy is 55-139x slower. A catalogue of
  ~1M items wants M=32 and ef 72-96.
- ``ef`` is the breadth for k=10 and scales with k (``scaled_ef``); each call passes its own breadth to
  hnswlib as the result count (hnswlib searches with ``max(ef_, k)``; ``ef_`` is pinned to 1), so ``ef``
  can change at run time and differs per query without shared state.
- **Exclusions: over-fetch + post-filter** (``exclusion="overfetch"``), the beam widened by the number of
  excluded live ids: the same recall as hnswlib's filter callback, and the callback is Python run for every
  visited node, so it holds the GIL throughout -- beside a busy Python thread (a worker's situation)
  over-fetch served more queries at a lower p99. ``exclusion="filter"`` suits single-threaded use with
  exclusions far from the queries.
- **Small catalogues: a full scan** (``full_scan_below``: off by default here, 5,000 in the worker's
  ``index_full_scan_below``). Up to that many searchable items a search is one matrix product over all of
  them plus a two-level top-k select -- exact, and exclusions are a mask, not a wider beam; with session-like
  exclusions it was faster than the graph up to ~10k items. The scan matrix is built on the first search
  after a write (the writes drop it).
- **Labels.** Every insert gets a *fresh* integer label (a counter never reused, saved in snapshots). Reusing
  a label hnswlib has seen is unsafe twice over: ``replace_deleted`` with a live label leaves an undeletable
  ghost copy, and filling a tombstoned slot erases its *old* label from hnswlib's lookup table, which would
  unlink a live item that had been given that label again.
- **Updates and deleted slots.** hnswlib writes into an existing slot (in-place update, or an insert with
  ``replace_deleted``) by repairing the slot's neighbourhood, 4.6-12x slower than tombstone + append. So an
  update is tombstone + append with a fresh label while tombstones stay under ``max_deleted_fraction`` (10%)
  of the graph, in place beyond; inserts append while under that budget and fill tombstoned slots beyond it
  or when the graph is full; the graph doubles (``resize_index``) only when neither fits. A catalogue with
  churn therefore stops growing, and tombstones (each 10% of them costs hnswlib ~20% latency) stay bounded.
- **Availability.** ``set_available(ids, False)`` tombstones the item (searches skip it at no cost, unlike a
  filter) and parks its vector in Python, so ``get`` still works and ``set_available(ids, True)`` restores it
  (``unmark_deleted``, or a fresh insert if its slot was reused). ``delete`` forgets the item. Upserting an
  unavailable id replaces its parked vector; it stays unavailable.
- **Exactly k.** If fewer than ``min(k, eligible)`` come back (tombstones can cut the graph), the query is
  retried with a doubled breadth, then answered by an exact scan as a last resort; both are counted.
- **Concurrency.** hnswlib's ``add_items``/``mark_deleted``/``resize_index``/``save_index`` are not safe beside
  ``knn_query`` (without the lock the stress test aborted or segfaulted in 2 of 5 runs), so writes, resizes
  and saves take the write lock and searches the read lock (phase-fair: see ``_rwlock``); searches release
  the GIL in hnswlib and run in parallel. Writes hold the lock for ``write_chunk`` items, for at least one
  chunk and until ``write_slice_s`` has passed; the default (1 item per hold) gave searches beside a
  non-stop writer the lowest p99.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import hnswlib
import numpy as np
import numpy.typing as npt

from streamrec.index._base import (
    DeleteResult,
    FloatArray,
    IndexStats,
    Metric,
    SearchHits,
    SnapshotError,
    UnknownItemError,
    UpsertResult,
    as_matrix,
    check_exclude,
    check_ids,
    check_k,
    check_metric,
    last_wins,
    scaled_ef,
)
from streamrec.index._rwlock import RWLock
from streamrec.index.snapshot import SnapshotWriter, check_expected, check_jsonable, open_snapshot, write_json

log = logging.getLogger(__name__)

Exclusion = Literal["overfetch", "filter"]
_GRAPH, _ITEMS, _PARKED = "graph.bin", "items.json", "parked.npy"


class HnswIndex:
    """See the module docstring. ``ef`` is the search breadth for k = 10 (scaled for other k); it may be
    changed at any time (each search passes its own breadth to hnswlib)."""

    KIND = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 32,
        initial_capacity: int = 1024,
        exclusion: Exclusion = "overfetch",
        max_deleted_fraction: float = 0.1,
        write_chunk: int = 1,
        write_slice_s: float = 0.0,
        add_threads: int = 1,
        seed: int = 100,
        full_scan_below: int = 0,
        _graph: hnswlib.Index | None = None,
    ) -> None:
        if dim < 1 or m < 2 or ef_construction < 1 or ef < 1 or initial_capacity < 1 or write_chunk < 1:
            raise ValueError("dim, m (>=2), ef_construction, ef, initial_capacity and write_chunk must be positive")
        if full_scan_below < 0:
            raise ValueError("full_scan_below must be >= 0 (0: always search the graph)")
        self.full_scan_below = full_scan_below
        if exclusion not in ("overfetch", "filter"):
            raise ValueError(f"exclusion must be 'overfetch' or 'filter', got {exclusion!r}")
        self._dim, self._metric = dim, check_metric(metric)
        self.m, self.ef_construction, self.ef = m, ef_construction, ef
        self.exclusion: Exclusion = exclusion
        if not 0.0 <= max_deleted_fraction <= 1.0 or write_slice_s < 0:
            raise ValueError("max_deleted_fraction must be in [0, 1] and write_slice_s >= 0")
        self.max_deleted_fraction = max_deleted_fraction
        self.write_chunk, self.write_slice_s, self.add_threads = write_chunk, write_slice_s, add_threads
        if _graph is None:
            _graph = hnswlib.Index(space="ip", dim=dim)
            _graph.init_index(
                max_elements=initial_capacity,
                M=m,
                ef_construction=ef_construction,
                random_seed=seed,
                allow_replace_deleted=True,
            )
        _graph.set_ef(1)  # hnswlib searches with max(ef_, k): each call passes its own breadth as k
        self._g = _graph
        self._lock = RWLock()
        self._label_of: dict[str, int] = {}  # live, available
        self._id_of: dict[int, str] = {}
        # unavailable items: id -> (label, possibly reused since; vector; vector changed while parked)
        self._parked: dict[str, tuple[int, FloatArray, bool]] = {}
        self._next_label = 0
        self._tombstones = 0
        self._counts = dict.fromkeys(("inserts", "updates", "deletes", "unknown_deletes", "resizes"), 0)
        self._qlock = threading.Lock()
        self._qcounts = dict.fromkeys(("queries", "retries", "fallbacks", "scans"), 0)
        # full-scan matrix of the searchable items (labels, vectors, row of label), built on demand under the
        # read lock, dropped by every write (under the write lock)
        self._scan: tuple[npt.NDArray[np.uint64], FloatArray, dict[int, int]] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> Metric:
        return self._metric

    def __len__(self) -> int:
        return len(self._label_of) + len(self._parked)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._label_of or item_id in self._parked

    def is_available(self, item_id: str) -> bool:
        return item_id in self._label_of

    def ids(self) -> list[str]:
        with self._lock.read():
            return [*self._label_of, *self._parked]

    def stats(self) -> IndexStats:
        with self._lock.read():
            cap = self._g.get_max_elements()
            per_item = self._dim * 4 + self.m * 2 * 4 + 8 + 4
            with self._qlock:
                q = dict(self._qcounts)
            c = self._counts
            return IndexStats(
                kind=self.KIND,
                dim=self._dim,
                metric=self._metric,
                items=len(self._label_of),
                unavailable=len(self._parked),
                capacity=cap,
                deleted_slots=self._tombstones,
                memory_bytes=cap * per_item + sum(p[1].nbytes for p in self._parked.values()),
                inserts_total=c["inserts"],
                updates_total=c["updates"],
                deletes_total=c["deletes"],
                unknown_deletes_total=c["unknown_deletes"],
                resizes_total=c["resizes"],
                queries_total=q["queries"],
                search_retries_total=q["retries"],
                exact_fallbacks_total=q["fallbacks"],
                full_scans_total=q["scans"],
            )

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> UpsertResult:
        """Insert new ids, replace the vectors of known ones. ``vectors``: ``float32[len(ids), dim]``.
        All rows are validated before anything changes. The write lock is taken in slices of about
        ``write_slice_s`` (``write_chunk`` items at a time), so searches get in between."""
        id_list = check_ids(ids)
        vecs = as_matrix(vectors, self._dim, self._metric)
        if vecs.shape[0] != len(id_list):
            raise ValueError(f"{len(id_list)} ids but {vecs.shape[0]} vectors")
        id_list, vecs = last_wins(id_list, vecs)
        inserted = updated = pos = 0
        while pos < len(id_list):
            with self._lock.write():
                until = time.monotonic() + self.write_slice_s
                self._scan = None
                while pos < len(id_list):
                    end = pos + self.write_chunk
                    i, u = self._upsert_locked(id_list[pos:end], vecs[pos:end])
                    inserted, updated, pos = inserted + i, updated + u, end
                    if time.monotonic() >= until:
                        break
        return UpsertResult(inserted, updated)

    def _reusing(self, n: int) -> bool:
        """Fill tombstoned slots (hnswlib then repairs the slot's neighbourhood: ~10x the cost of an append)
        once they reach ``max_deleted_fraction`` of the graph, or when appending ``n`` would need a resize."""
        if not self._tombstones:
            return False
        count: int = self._g.get_current_count()
        return bool(self._tombstones >= self.max_deleted_fraction * count or count + n > self._g.get_max_elements())

    def _upsert_locked(self, ids: list[str], vecs: FloatArray) -> tuple[int, int]:
        upd_pos = [p for p, x in enumerate(ids) if x in self._label_of]
        moved: list[int] = []  # updated as delete + append (fresh label)
        if upd_pos:
            count: int = self._g.get_current_count()
            n = len(upd_pos)
            cheap = self._g.get_max_elements() - count >= n and self._tombstones + n <= self.max_deleted_fraction * (
                count + n
            )
            if not cheap:
                labels = np.array([self._label_of[ids[p]] for p in upd_pos], dtype=np.uint64)
                self._g.add_items(vecs[upd_pos], labels, num_threads=self.add_threads)  # in place
            else:
                for p in upd_pos:
                    lab = self._label_of.pop(ids[p])
                    self._g.mark_deleted(lab)
                    del self._id_of[lab]
                    self._tombstones += 1
                moved = upd_pos
        if moved:
            self._insert_locked([ids[p] for p in moved], vecs[moved], replace=False)
        parked = 0
        new_pos: list[int] = []
        for p, x in enumerate(ids):
            if x in self._parked:
                self._parked[x] = (self._parked[x][0], vecs[p].copy(), True)
                parked += 1
            elif x not in self._label_of:
                new_pos.append(p)
        if new_pos:
            self._insert_locked([ids[p] for p in new_pos], vecs[new_pos])
        inserted = len(new_pos)
        self._counts["inserts"] += inserted
        self._counts["updates"] += len(upd_pos) + parked
        return inserted, len(upd_pos) + parked

    def _insert_locked(self, ids: list[str], vecs: FloatArray, replace: bool | None = None) -> None:
        n = len(ids)
        replace = self._reusing(n) if replace is None else replace
        appended = max(0, n - self._tombstones) if replace else n
        need = self._g.get_current_count() + appended
        cap = self._g.get_max_elements()
        if need > cap:
            new_cap = max(need, 2 * cap)
            self._g.resize_index(new_cap)
            self._counts["resizes"] += 1
            log.debug("hnsw index resized %d -> %d slots", cap, new_cap)
        labels = np.arange(self._next_label, self._next_label + n, dtype=np.uint64)
        self._g.add_items(vecs, labels, num_threads=self.add_threads, replace_deleted=replace)
        self._next_label += n
        self._tombstones -= n - appended
        for x, lab in zip(ids, labels.tolist(), strict=True):
            self._label_of[x] = lab
            self._id_of[lab] = x

    def reserve(self, capacity: int) -> None:
        """Grow the graph to at least ``capacity`` slots now (e.g. before a bulk load), under the write lock."""
        with self._lock.write():
            cap = self._g.get_max_elements()
            if capacity > cap:
                self._g.resize_index(capacity)
                self._counts["resizes"] += 1

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        """Remove ids (available or not); unknown ids are ignored and counted. Once this returns, no search
        returns them."""
        id_list = check_ids(ids)
        deleted = unknown = 0
        with self._lock.write():
            self._scan = None
            for x in id_list:
                lab = self._label_of.pop(x, None)
                if lab is not None:
                    self._g.mark_deleted(lab)
                    del self._id_of[lab]
                    self._tombstones += 1
                    deleted += 1
                elif self._parked.pop(x, None) is not None:
                    deleted += 1
                else:
                    unknown += 1
            self._counts["deletes"] += deleted
            self._counts["unknown_deletes"] += unknown
        return DeleteResult(deleted, unknown)

    def set_available(self, ids: Iterable[str], available: bool) -> int:
        """Mark ids searchable or not (kept in the index either way); returns how many changed state."""
        id_list = check_ids(ids)
        changed = 0
        with self._lock.write():
            self._scan = None
            if not available:
                for x in id_list:
                    lab = self._label_of.pop(x, None)
                    if lab is None:
                        continue
                    vec = np.asarray(self._g.get_items([lab]), dtype=np.float32)[0]
                    self._g.mark_deleted(lab)
                    del self._id_of[lab]
                    self._parked[x] = (lab, vec, False)
                    self._tombstones += 1
                    changed += 1
                return changed
            readd_ids: list[str] = []
            readd: list[FloatArray] = []
            for x in id_list:
                if x not in self._parked:
                    continue
                lab, vec, stale = self._parked.pop(x)
                changed += 1
                try:
                    self._g.unmark_deleted(lab)  # slot not reused yet: the old label is still there
                except RuntimeError:
                    readd_ids.append(x)
                    readd.append(vec)
                    continue
                self._tombstones -= 1
                if stale:  # upserted while unavailable: update in place (the label is live again)
                    self._g.add_items(vec[None, :], np.array([lab], np.uint64), num_threads=1)
                self._label_of[x] = lab
                self._id_of[lab] = x
            if readd_ids:
                self._insert_locked(readd_ids, np.stack(readd))
        return changed

    # ----------------------------------------------------------------- reads
    def get(self, ids: Sequence[str]) -> FloatArray:
        """The stored vectors (unit-normalised for cosine) as ``float32[len(ids), dim]``."""
        id_list = check_ids(ids)
        out = np.empty((len(id_list), self._dim), dtype=np.float32)
        with self._lock.read():
            missing = [x for x in id_list if x not in self]
            if missing:
                raise UnknownItemError(f"{len(missing)} unknown item ids, e.g. {missing[:5]}")
            live = [p for p, x in enumerate(id_list) if x in self._label_of]
            if live:
                labels = [self._label_of[id_list[p]] for p in live]
                scan = self._scan
                if scan is not None:  # the full scan's copy of every live vector: hnswlib takes ~8 us per id
                    row_of = scan[2]
                    out[live] = scan[1][[row_of[lab] for lab in labels]]
                else:
                    out[live] = self._g.get_items(labels, return_type="numpy")  # not lists of Python floats
            for p, x in enumerate(id_list):
                if x in self._parked:
                    out[p] = self._parked[x][1]
        return out

    def search(
        self, queries: npt.ArrayLike, k: int, *, exclude: Sequence[Collection[str]] | None = None
    ) -> list[SearchHits]:
        """Top-k available items per query, best first, never an id from that query's ``exclude`` set.
        Returns exactly ``min(k, eligible)`` hits per query. ``queries``: ``float32[n, dim]`` or ``[dim]``."""
        q = as_matrix(queries, self._dim, self._metric, what="queries")
        k = check_k(k)
        excl = check_exclude(exclude, q.shape[0])
        self._lock.acquire_read()
        try:
            out = self._search_locked(q, k, excl)
        finally:
            self._lock.release_read()
        with self._qlock:
            self._qcounts["queries"] += q.shape[0]
        return out

    def _search_locked(self, q: FloatArray, k: int, exclude: Sequence[Collection[str]] | None) -> list[SearchHits]:
        live = len(self._label_of)
        if live == 0:
            return [SearchHits((), np.empty(0, np.float32)) for _ in range(q.shape[0])]
        if live <= self.full_scan_below:
            return self._full_scan(q, k, exclude)
        base = min(scaled_ef(self.ef, k), live)
        if exclude is None or not any(exclude):
            try:
                labels, dist = self._g.knn_query(q, k=base, num_threads=1)
            except RuntimeError:
                return [self._one(q[i], k, frozenset()) for i in range(q.shape[0])]
            hits = [self._hits(labels[i], dist[i], frozenset(), min(k, live)) for i in range(q.shape[0])]
            return [h if h is not None else self._one(q[i], k, frozenset()) for i, h in enumerate(hits)]
        out = []
        for i in range(q.shape[0]):
            ex = frozenset(lab for x in exclude[i] if (lab := self._label_of.get(x)) is not None)
            out.append(self._one(q[i], k, ex))
        return out

    def _full_scan(self, q: FloatArray, k: int, exclude: Sequence[Collection[str]] | None) -> list[SearchHits]:
        """Exact answers by one matrix product over every searchable item (small catalogues: see
        ``full_scan_below``). Called under the read lock."""
        scan = self._scan
        if scan is None:
            labels = np.fromiter(self._id_of, dtype=np.uint64, count=len(self._id_of))
            mat = np.ascontiguousarray(self._g.get_items(labels, return_type="numpy"), dtype=np.float32)
            scan = self._scan = (labels, mat, {lab: r for r, lab in enumerate(labels.tolist())})
        labels, mat, row_of = scan
        with self._qlock:
            self._qcounts["scans"] += q.shape[0]
        scores = q @ mat.T
        n = mat.shape[0]
        want = []
        live_of = self._label_of  # the scan was built from these labels (writes drop it): each has a row
        for i in range(q.shape[0]):
            rows = [] if exclude is None else [row_of[lab] for x in exclude[i] if (lab := live_of.get(x)) is not None]
            if rows:
                scores[i, rows] = -np.inf
            want.append(min(k, n - len(rows)))
        kk = min(k, n)
        top = _top_columns(scores, kk) if kk < n else np.argsort(-scores, axis=1)
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        top_labels = labels[np.minimum(top, n - 1)].tolist()  # padding columns sort last: never returned
        return [
            SearchHits(tuple(self._id_of[lab] for lab in top_labels[i][:w]), top_scores[i, :w].astype(np.float32))
            for i, w in enumerate(want)
        ]

    def _one(self, q: FloatArray, k: int, ex: frozenset[int]) -> SearchHits:
        live = len(self._label_of)
        want = min(k, live - len(ex))
        if want <= 0:
            return SearchHits((), np.empty(0, np.float32))
        use_filter = self.exclusion == "filter" and ex
        # over-fetch widens the beam by the excluded count: the filter callback keeps excluded items out of
        # its beam, so this gives both the same breadth over eligible items (and equal recall)
        fetch = scaled_ef(self.ef, k) + (0 if use_filter else len(ex))
        fetch = min(fetch, live - len(ex) if use_filter else live)
        for attempt in range(8):
            try:
                if use_filter:
                    labels, dist = self._g.knn_query(q, k=fetch, num_threads=1, filter=lambda lab: lab not in ex)
                else:
                    labels, dist = self._g.knn_query(q, k=fetch, num_threads=1)
            except RuntimeError:
                hits = None
            else:
                hits = self._hits(labels[0], dist[0], ex, want)
            if hits is not None:
                return hits
            cap = live - len(ex) if use_filter else live
            if fetch >= cap or attempt == 7:
                break
            with self._qlock:
                self._qcounts["retries"] += 1
            fetch = min(2 * fetch, cap)
        return self._exact(q, want, ex)

    def _hits(
        self, labels: npt.NDArray[np.uint64], dist: FloatArray, ex: frozenset[int], want: int
    ) -> SearchHits | None:
        if not ex:  # the common case: the first `want` labels, all live under the read lock
            if len(labels) < want:
                return None
            try:
                ids = tuple(map(self._id_of.__getitem__, labels[:want].tolist()))
            except KeyError:  # cannot happen under the lock; never return a deleted id
                return None
            return SearchHits(ids, (1.0 - dist[:want]).astype(np.float32))
        found: list[str] = []
        keep: list[int] = []
        for j, lab in enumerate(labels.tolist()):
            if lab in ex:
                continue
            x = self._id_of.get(lab)
            if x is None:
                continue
            found.append(x)
            keep.append(j)
            if len(found) == want:
                return SearchHits(tuple(found), (1.0 - dist[keep]).astype(np.float32))
        return None

    def _exact(self, q: FloatArray, want: int, ex: frozenset[int]) -> SearchHits:
        with self._qlock:
            self._qcounts["fallbacks"] += 1
        labels = [lab for lab in self._id_of if lab not in ex]
        vecs = np.asarray(self._g.get_items(labels), dtype=np.float32)
        scores = vecs @ q
        top = np.argsort(-scores, kind="stable")[:want]
        return SearchHits(tuple(self._id_of[labels[j]] for j in top), scores[top].astype(np.float32))

    # ----------------------------------------------------------------- snapshots
    def _params(self) -> dict[str, Any]:
        return {
            "dim": self._dim,
            "metric": self._metric,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
        }

    def save(self, directory: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """Atomically snapshot the index with ``extra`` (any JSON-able dict, e.g. the Kafka offsets it reflects)
        under ``directory``; returns the snapshot's own directory. Holds the write lock while copying."""
        extra = check_jsonable(extra)
        with SnapshotWriter(directory) as w:
            with self._lock.write():
                self._g.save_index(str(w.path(_GRAPH)))
                items = {
                    "live": [[x, lab] for x, lab in self._label_of.items()],
                    "parked": [[x, p[0], p[2]] for x, p in self._parked.items()],
                    "next_label": self._next_label,
                    "tombstones": self._tombstones,
                    "capacity": self._g.get_max_elements(),
                    "element_count": self._g.get_current_count(),
                    "counters": dict(self._counts),
                }
                parked = (
                    np.stack([p[1] for p in self._parked.values()])
                    if self._parked
                    else np.empty((0, self._dim), np.float32)
                )
            write_json(w.path(_ITEMS), items)
            np.save(w.path(_PARKED), parked, allow_pickle=False)
            return w.commit(self.KIND, {**self._params(), "items": len(self), "extra": extra})

    @classmethod
    def load(
        cls, directory: Path | str, *, dim: int | None = None, metric: Metric | None = None, **settings: Any
    ) -> tuple[HnswIndex, dict[str, Any]]:
        """Load the snapshot under ``directory``; returns the index and the caller's ``extra`` dict.

        ``dim``/``metric``, when given, must match the snapshot. ``settings`` override run-time settings
        (``ef``, ``exclusion``, ``write_chunk``, ``add_threads``). Raises :class:`SnapshotError` if the
        snapshot is missing, corrupt or mismatched."""
        snap, meta = open_snapshot(directory, cls.KIND, (_GRAPH, _ITEMS, _PARKED))
        check_expected(meta, dim=dim, metric=metric)
        try:
            items = json.loads((snap / _ITEMS).read_text(encoding="utf-8"))
            parked = np.load(snap / _PARKED, allow_pickle=False)
            d = int(meta["dim"])
            graph = hnswlib.Index(space="ip", dim=d)
            graph.load_index(str(snap / _GRAPH), max_elements=int(items["capacity"]), allow_replace_deleted=True)
            params = {
                "metric": meta["metric"],
                "m": int(meta["m"]),
                "ef_construction": int(meta["ef_construction"]),
                "ef": int(meta["ef"]),
                **settings,
            }
            idx = cls(d, _graph=graph, **params)
            idx._label_of = {str(x): int(lab) for x, lab in items["live"]}
            idx._id_of = {lab: x for x, lab in idx._label_of.items()}
            if parked.shape != (len(items["parked"]), d) or parked.dtype != np.float32:
                raise SnapshotError(f"{snap / _PARKED} has shape {parked.shape}, expected {len(items['parked'])} x {d}")
            idx._parked = {
                str(x): (int(lab), parked[j].copy(), bool(stale)) for j, (x, lab, stale) in enumerate(items["parked"])
            }
            idx._next_label, idx._tombstones = int(items["next_label"]), int(items["tombstones"])
            idx._counts.update({key: int(v) for key, v in items["counters"].items() if key in idx._counts})
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
            raise SnapshotError(f"snapshot {snap} is inconsistent ({type(e).__name__}: {e}): rebuild the index") from e
        if (
            graph.get_current_count() != int(items["element_count"])
            or len(idx._label_of) + idx._tombstones != graph.get_current_count()
            or len(idx._id_of) != len(idx._label_of)
        ):
            raise SnapshotError(f"snapshot {snap}: id map and graph disagree on the item count: rebuild the index")
        log.info("loaded hnsw index snapshot %s: %d items", snap, len(idx))
        return idx, dict(meta.get("extra") or {})


def _top_columns(scores: FloatArray, kk: int, block: int = 32) -> npt.NDArray[np.intp]:
    """Column indices of the ``kk`` largest scores of every row (unordered; may include padding columns >= the
    width, scoring -inf, only when a row has fewer than ``kk`` finite scores). Two-level select: the kk items
    are inside the kk blocks with the largest maxima (any item outside them has kk larger block maxima above
    it), so only kk * block candidates per row are partitioned -- 3-4x cheaper than a full ``argpartition``
    of a 1-5k-wide row."""
    nq, n = scores.shape
    if n <= 2 * kk * block:
        return np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    nb = -(-n // block)
    padded = scores if nb * block == n else np.pad(scores, ((0, 0), (0, nb * block - n)), constant_values=-np.inf)
    best = np.argpartition(-padded.reshape(nq, nb, block).max(axis=2), kk - 1, axis=1)[:, :kk]
    cand = (best[:, :, None] * block + np.arange(block)).reshape(nq, kk * block)
    sel = np.argpartition(-np.take_along_axis(padded, cand, 1), kk - 1, axis=1)[:, :kk]
    out: npt.NDArray[np.intp] = np.take_along_axis(cand, sel, 1)
    return out
