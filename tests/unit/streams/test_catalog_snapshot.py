"""The catalogue replica owns its snapshot: what ``snapshot()`` writes, a new replica reads back (no broker:
snapshots and restores need none)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from streamrec.index import ExactIndex, HnswIndex, IndexConfig, SnapshotError
from streamrec.streams.catalog import CatalogReplica, SnapshotInfo

DIM = 8


class _NoEncoder:
    dim = DIM

    def encode(self, texts: object) -> np.ndarray:
        raise AssertionError("restoring a snapshot must not encode anything")


def _replica(
    tmp_path: Path, pool: ThreadPoolExecutor, *, model: str = "m@1", topic: str = "items", kind: str = "hnsw"
) -> CatalogReplica:
    return CatalogReplica(
        bootstrap="127.0.0.1:1",
        topic=topic,
        index_config=IndexConfig(kind=kind),
        dim=DIM,  # type: ignore[arg-type]
        model=model,
        encoder=_NoEncoder(),
        pool=pool,
        snapshot_dir=tmp_path / "index",
    )


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as p:
        yield p


async def _fill_and_snapshot(replica: CatalogReplica) -> None:
    vecs = np.eye(DIM, dtype=np.float32)[:3]
    replica.index.upsert(["a", "b", "c"], vecs)
    replica.titles.apply([("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")])
    replica.stats.positions = {0: 17, 1: 4}
    await replica.snapshot()


async def test_a_new_replica_resumes_from_the_snapshot(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    first = _replica(tmp_path, pool)
    assert len(first.index) == 0 and first.start_offsets == {} and first.titles == {}
    assert first.stats.last_snapshot_wall is None
    await _fill_and_snapshot(first)

    second = _replica(tmp_path, pool)
    assert isinstance(second.index, HnswIndex)
    assert sorted(second.index.ids()) == ["a", "b", "c"]
    assert second.start_offsets == {0: 17, 1: 4}
    assert second.titles == {"a": "Alpha", "b": "Beta", "c": "Gamma"}
    assert second.stats.last_snapshot_wall is not None


@pytest.mark.parametrize("change", [{"model": "m@2"}, {"topic": "other-items"}, {"kind": "exact"}])
async def test_a_snapshot_for_another_model_topic_or_kind_is_rebuilt(
    tmp_path: Path, pool: ThreadPoolExecutor, change: dict[str, str]
) -> None:
    await _fill_and_snapshot(_replica(tmp_path, pool))
    again = _replica(tmp_path, pool, **change)
    assert len(again.index) == 0 and again.start_offsets == {} and again.titles == {}
    if change.get("kind") == "exact":
        assert isinstance(again.index, ExactIndex)


def test_snapshot_info_round_trip_and_refusal() -> None:
    info = SnapshotInfo("items", "m@1", {0: 3}, {"a": "Alpha"})
    assert SnapshotInfo.from_extra(info.to_extra()) == info
    with pytest.raises(SnapshotError, match="replica info"):
        SnapshotInfo.from_extra({"topic": "items"})
