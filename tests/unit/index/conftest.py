"""Fixtures of the index tests: one factory per implementation, and clustered unit vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamrec.index import ExactIndex, HnswIndex, VectorIndex

Factory = Callable[..., VectorIndex]

IMPLEMENTATIONS: dict[str, Factory] = {
    "exact": lambda dim, **kw: ExactIndex(dim, **kw),
    "hnsw": lambda dim, **kw: HnswIndex(dim, **kw),
    "hnsw-filter": lambda dim, **kw: HnswIndex(dim, exclusion="filter", **kw),
    # every search answered by the small-catalogue full scan, through the same contract
    "hnsw-fullscan": lambda dim, **kw: HnswIndex(dim, full_scan_below=1_000_000, **kw),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make_index(request: pytest.FixtureRequest) -> Factory:
    return IMPLEMENTATIONS[request.param]


def load_like(index: VectorIndex, directory: Any, **kw: Any) -> tuple[VectorIndex, dict[str, Any]]:
    cls = type(index)
    assert cls in (ExactIndex, HnswIndex)
    return cls.load(directory, **kw)  # type: ignore[attr-defined, no-any-return]


def clustered(n: int, dim: int, *, clusters: int = 20, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """``float32[n, dim]`` unit vectors around ``clusters`` random centres (a catalogue-like density)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, start + n)]
