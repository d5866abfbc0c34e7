"""The index factory: every kind builds, saves and loads through the same two calls; mismatches are refused."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from streamrec.index import (
    INDEX_KINDS,
    ExactIndex,
    HnswIndex,
    IndexConfig,
    IndexKind,
    SnapshotError,
    VectorIndex,
    load_index,
    new_index,
)
from tests.unit.index.conftest import clustered, ids

DIM = 16


def test_kinds_are_the_literal() -> None:
    assert set(INDEX_KINDS) == set(get_args(IndexKind))


@pytest.mark.parametrize(("kind", "cls"), [("hnsw", HnswIndex), ("exact", ExactIndex)])
def test_new_index_builds_the_kind(kind: IndexKind, cls: type) -> None:
    index = new_index(IndexConfig(kind=kind), DIM)
    assert isinstance(index, cls) and isinstance(index, VectorIndex)
    assert index.dim == DIM and len(index) == 0


def test_hnsw_parameters_are_passed_on() -> None:
    index = new_index(IndexConfig(m=8, ef_construction=50, ef=12, full_scan_below=7), DIM)
    assert isinstance(index, HnswIndex)
    assert (index.m, index.ef_construction, index.ef, index.full_scan_below) == (8, 50, 12, 7)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_save_and_load_round_trip(kind: IndexKind, tmp_path: Path) -> None:
    config = IndexConfig(kind=kind)
    index = new_index(config, DIM)
    vecs = clustered(50, DIM)
    index.upsert(ids("i", 50), vecs)
    index.set_available(["i1"], False)
    index.save(tmp_path, extra={"offsets": {"0": 5}})
    loaded, extra = load_index(config, tmp_path, DIM)
    assert type(loaded) is type(index) and extra == {"offsets": {"0": 5}}
    assert sorted(loaded.ids()) == sorted(index.ids()) and not loaded.is_available("i1")
    np.testing.assert_allclose(loaded.get(["i7"]), index.get(["i7"]), atol=1e-6)


def test_run_time_settings_come_from_the_config_on_load(tmp_path: Path) -> None:
    index = new_index(IndexConfig(ef=16), DIM)
    index.upsert(ids("i", 10), clustered(10, DIM))
    index.save(tmp_path)
    loaded, _ = load_index(IndexConfig(ef=48, full_scan_below=3), tmp_path, DIM)
    assert isinstance(loaded, HnswIndex) and (loaded.ef, loaded.full_scan_below) == (48, 3)


def test_mismatches_are_snapshot_errors(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError):
        load_index(IndexConfig(), tmp_path / "none", DIM)
    index = new_index(IndexConfig(kind="exact"), DIM)
    index.upsert(["a"], clustered(1, DIM))
    index.save(tmp_path)
    with pytest.raises(SnapshotError, match="not 'hnsw'"):
        load_index(IndexConfig(kind="hnsw"), tmp_path, DIM)
    with pytest.raises(SnapshotError):
        load_index(IndexConfig(kind="exact"), tmp_path, DIM + 1)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexConfig(kind="faiss")  # type: ignore[arg-type]
