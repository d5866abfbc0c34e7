"""Vectors -> nearest catalogue items.

:class:`HnswIndex` (hnswlib, the live catalogue) and :class:`ExactIndex` (brute force: test oracle, tiny
catalogues) implement the :class:`VectorIndex` Protocol: string item ids, ``upsert``/``delete``/
``set_available``/``get``, batched ``search`` with per-query exclusions, counters in :class:`IndexStats`, and
atomic checksummed snapshots (``save(dir, extra)`` / ``load(dir)``). :func:`new_index` / :func:`load_index` build
or load one by name from an :class:`IndexConfig`. The package knows nothing of Kafka or metrics libraries.
"""

from streamrec.index._base import (
    DeleteResult,
    IndexStats,
    IndexStoreError,
    InvalidItemIdError,
    InvalidVectorError,
    Metric,
    SearchHits,
    SnapshotError,
    UnknownItemError,
    UpsertResult,
    VectorIndex,
)
from streamrec.index.exact import ExactIndex
from streamrec.index.factory import INDEX_KINDS, IndexConfig, IndexKind, load_index, new_index
from streamrec.index.hnsw import Exclusion, HnswIndex

__all__ = [
    "INDEX_KINDS",
    "DeleteResult",
    "ExactIndex",
    "Exclusion",
    "HnswIndex",
    "IndexConfig",
    "IndexKind",
    "IndexStats",
    "IndexStoreError",
    "InvalidItemIdError",
    "InvalidVectorError",
    "Metric",
    "SearchHits",
    "SnapshotError",
    "UnknownItemError",
    "UpsertResult",
    "VectorIndex",
    "load_index",
    "new_index",
]
