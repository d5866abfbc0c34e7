"""Build or load a :class:`~streamrec.index.VectorIndex` by name: the one place that knows the backends.

Callers (the worker's catalogue replica) describe the index with an :class:`IndexConfig` -- the backend's
``kind`` and its parameters -- and never name an implementation class. A new backend is one module with a
class implementing :class:`VectorIndex` (``save`` / a ``load`` classmethod) plus one entry in ``_BACKENDS``;
the contract suite in ``tests/unit/index/test_contract.py`` then runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamrec.index._base import Metric, VectorIndex
from streamrec.index.exact import ExactIndex
from streamrec.index.hnsw import HnswIndex

__all__ = ["INDEX_KINDS", "IndexConfig", "IndexKind", "load_index", "new_index"]

IndexKind = Literal["hnsw", "exact"]
INDEX_KINDS: tuple[IndexKind, ...] = ("hnsw", "exact")


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """What index to build. ``kind``: ``hnsw`` (hnswlib graph, the live catalogue) or ``exact`` (brute force:
    the test oracle, fine for a few thousand items). ``m``, ``ef_construction``, ``ef`` and
    ``full_scan_below`` apply to ``hnsw`` only (see :class:`HnswIndex`)."""

    kind: IndexKind = "hnsw"
    metric: Metric = "cosine"
    m: int = 16
    ef_construction: int = 200
    ef: int = 32
    full_scan_below: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {INDEX_KINDS}")


def _new_hnsw(config: IndexConfig, dim: int) -> VectorIndex:
    return HnswIndex(
        dim,
        metric=config.metric,
        m=config.m,
        ef_construction=config.ef_construction,
        ef=config.ef,
        full_scan_below=config.full_scan_below,
    )


def _load_hnsw(config: IndexConfig, directory: Path, dim: int) -> tuple[VectorIndex, dict[str, Any]]:
    # graph-shape parameters (m, ef_construction) come from the snapshot; run-time ones from the config
    return HnswIndex.load(
        directory, dim=dim, metric=config.metric, ef=config.ef, full_scan_below=config.full_scan_below
    )


def _new_exact(config: IndexConfig, dim: int) -> VectorIndex:
    return ExactIndex(dim, metric=config.metric)


def _load_exact(config: IndexConfig, directory: Path, dim: int) -> tuple[VectorIndex, dict[str, Any]]:
    return ExactIndex.load(directory, dim=dim, metric=config.metric)


_BACKENDS: dict[
    str,
    tuple[
        Callable[[IndexConfig, int], VectorIndex],
        Callable[[IndexConfig, Path, int], tuple[VectorIndex, dict[str, Any]]],
    ],
] = {
    "hnsw": (_new_hnsw, _load_hnsw),
    "exact": (_new_exact, _load_exact),
}


def new_index(config: IndexConfig, dim: int) -> VectorIndex:
    """An empty index of ``config.kind`` for ``dim``-dimensional vectors."""
    return _BACKENDS[config.kind][0](config, dim)


def load_index(config: IndexConfig, directory: Path | str, dim: int) -> tuple[VectorIndex, dict[str, Any]]:
    """The snapshot under ``directory`` and the ``extra`` dict saved with it.

    Raises :class:`~streamrec.index.SnapshotError` when the snapshot is missing, corrupt, of another kind or
    made for another dimension or metric: the caller then builds a new index (:func:`new_index`)."""
    return _BACKENDS[config.kind][1](config, Path(directory), dim)
