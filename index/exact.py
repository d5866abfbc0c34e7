"""Brute-force exact index with the :class:`~streamrec.index.VectorIndex` interface: the test oracle, and the
right choice for tiny catalogues (a few thousand items: one matrix product is then as fast as a graph walk).

Vectors live in one ``float32[capacity, dim]`` matrix; deleted rows are reused; a boolean mask marks the rows
search may return (live and available).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

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
)
from streamrec.index._rwlock import RWLock
from streamrec.index.snapshot import SnapshotWriter, check_expected, check_jsonable, open_snapshot, write_json

log = logging.getLogger(__name__)
_VECTORS, _ITEMS = "vectors.npy", "items.json"


class ExactIndex:
    KIND = "exact"

    def __init__(self, dim: int, *, metric: Metric = "cosine", initial_capacity: int = 1024) -> None:
        if dim < 1 or initial_capacity < 1:
            raise ValueError("dim and initial_capacity must be positive")
        self._dim, self._metric = dim, check_metric(metric)
        self._vecs = np.zeros((initial_capacity, dim), np.float32)
        self._searchable = np.zeros(initial_capacity, bool)
        self._slot_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._parked: set[str] = set()
        self._free: list[int] = list(range(initial_capacity - 1, -1, -1))
        self._lock = RWLock()
        self._counts = dict.fromkeys(("inserts", "updates", "deletes", "unknown_deletes", "resizes"), 0)
        self._qlock = threading.Lock()
        self._queries = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> Metric:
        return self._metric

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot_of

    def is_available(self, item_id: str) -> bool:
        return item_id in self._slot_of and item_id not in self._parked

    def ids(self) -> list[str]:
        with self._lock.read():
            return list(self._slot_of)

    def stats(self) -> IndexStats:
        with self._lock.read():
            c = self._counts
            return IndexStats(
                kind=self.KIND,
                dim=self._dim,
                metric=self._metric,
                items=len(self._slot_of) - len(self._parked),
                unavailable=len(self._parked),
                capacity=self._vecs.shape[0],
                deleted_slots=0,
                memory_bytes=self._vecs.nbytes + self._searchable.nbytes,
                inserts_total=c["inserts"],
                updates_total=c["updates"],
                deletes_total=c["deletes"],
                unknown_deletes_total=c["unknown_deletes"],
                resizes_total=c["resizes"],
                queries_total=self._queries,
                search_retries_total=0,
                exact_fallbacks_total=0,
            )

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> UpsertResult:
        id_list = check_ids(ids)
        vecs = as_matrix(vectors, self._dim, self._metric)
        if vecs.shape[0] != len(id_list):
            raise ValueError(f"{len(id_list)} ids but {vecs.shape[0]} vectors")
        id_list, vecs = last_wins(id_list, vecs)
        inserted = updated = 0
        with self._lock.write():
            new = sum(x not in self._slot_of for x in id_list)
            if new > len(self._free):
                self._grow(len(self._slot_of) + new)
            for x, v in zip(id_list, vecs, strict=True):
                slot = self._slot_of.get(x)
                if slot is None:
                    slot = self._free.pop()
                    self._slot_of[x], self._id_of[slot] = slot, x
                    self._searchable[slot] = True
                    inserted += 1
                else:
                    updated += 1
                self._vecs[slot] = v
            self._counts["inserts"] += inserted
            self._counts["updates"] += updated
        return UpsertResult(inserted, updated)

    def _grow(self, need: int) -> None:
        old = self._vecs.shape[0]
        cap = max(need, 2 * old)
        vecs = np.zeros((cap, self._dim), np.float32)
        vecs[:old] = self._vecs
        mask = np.zeros(cap, bool)
        mask[:old] = self._searchable
        self._vecs, self._searchable = vecs, mask
        self._free = list(range(cap - 1, old - 1, -1)) + self._free
        self._counts["resizes"] += 1

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        id_list = check_ids(ids)
        deleted = unknown = 0
        with self._lock.write():
            for x in id_list:
                slot = self._slot_of.pop(x, None)
                if slot is None:
                    unknown += 1
                    continue
                del self._id_of[slot]
                self._parked.discard(x)
                self._searchable[slot] = False
                self._free.append(slot)
                deleted += 1
            self._counts["deletes"] += deleted
            self._counts["unknown_deletes"] += unknown
        return DeleteResult(deleted, unknown)

    def set_available(self, ids: Iterable[str], available: bool) -> int:
        id_list = check_ids(ids)
        changed = 0
        with self._lock.write():
            for x in id_list:
                slot = self._slot_of.get(x)
                if slot is None or (x not in self._parked) == available:
                    continue
                self._searchable[slot] = available
                if available:
                    self._parked.discard(x)
                else:
                    self._parked.add(x)
                changed += 1
        return changed

    def get(self, ids: Sequence[str]) -> FloatArray:
        id_list = check_ids(ids)
        with self._lock.read():
            missing = [x for x in id_list if x not in self._slot_of]
            if missing:
                raise UnknownItemError(f"{len(missing)} unknown item ids, e.g. {missing[:5]}")
            return self._vecs[[self._slot_of[x] for x in id_list]].copy()

    def search(
        self, queries: npt.ArrayLike, k: int, *, exclude: Sequence[Collection[str]] | None = None
    ) -> list[SearchHits]:
        q = as_matrix(queries, self._dim, self._metric, what="queries")
        k = check_k(k)
        excl = check_exclude(exclude, q.shape[0])
        out: list[SearchHits] = []
        with self._lock.read():
            scores = q @ self._vecs.T
            scores[:, ~self._searchable] = -np.inf
            for i in range(q.shape[0]):
                row = scores[i]
                if excl is not None:
                    ex = [s for x in excl[i] if (s := self._slot_of.get(x)) is not None]
                    row[ex] = -np.inf
                eligible = int(np.isfinite(row).sum())
                want = min(k, eligible)
                top = np.argpartition(-row, want - 1)[:want] if want else np.empty(0, np.int64)
                top = top[np.lexsort((top, -row[top]))]
                out.append(SearchHits(tuple(self._id_of[int(s)] for s in top), row[top].astype(np.float32)))
        with self._qlock:
            self._queries += q.shape[0]
        return out

    def save(self, directory: Path | str, extra: dict[str, Any] | None = None) -> Path:
        extra = check_jsonable(extra)
        with SnapshotWriter(directory) as w:
            with self._lock.write():
                ids = list(self._slot_of)
                vecs = self._vecs[[self._slot_of[x] for x in ids]] if ids else np.empty((0, self._dim), np.float32)
                items = {"ids": ids, "parked": sorted(self._parked), "counters": dict(self._counts)}
            np.save(w.path(_VECTORS), vecs, allow_pickle=False)
            write_json(w.path(_ITEMS), items)
            return w.commit(self.KIND, {"dim": self._dim, "metric": self._metric, "items": len(ids), "extra": extra})

    @classmethod
    def load(
        cls, directory: Path | str, *, dim: int | None = None, metric: Metric | None = None
    ) -> tuple[ExactIndex, dict[str, Any]]:
        snap, meta = open_snapshot(directory, cls.KIND, (_VECTORS, _ITEMS))
        check_expected(meta, dim=dim, metric=metric)
        try:
            vecs = np.load(snap / _VECTORS, allow_pickle=False)
            items = json.loads((snap / _ITEMS).read_text(encoding="utf-8"))
            d = int(meta["dim"])
            ids = [str(x) for x in items["ids"]]
            if vecs.dtype != np.float32 or vecs.shape != (len(ids), d):
                raise SnapshotError(f"{snap / _VECTORS} has shape {vecs.shape}, expected {len(ids)} x {d}")
            idx = cls(d, metric=meta["metric"], initial_capacity=max(1, len(ids)))
            idx.upsert(ids, vecs)
            idx.set_available([str(x) for x in items["parked"]], False)
            idx._counts.update({key: int(v) for key, v in items["counters"].items() if key in idx._counts})
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise SnapshotError(f"snapshot {snap} is inconsistent ({type(e).__name__}: {e}): rebuild the index") from e
        return idx, dict(meta.get("extra") or {})
