"""One contract suite, run against every VectorIndex implementation (exact, HNSW over-fetch, HNSW filter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.index import (
    IndexStoreError,
    InvalidItemIdError,
    InvalidVectorError,
    SnapshotError,
    UnknownItemError,
    VectorIndex,
)
from tests.unit.index.conftest import Factory, clustered, ids, load_like

DIM = 16


def filled(make_index: Factory, n: int = 200, **kw: object) -> tuple[VectorIndex, np.ndarray]:
    index = make_index(DIM, **kw)
    vecs = clustered(n, DIM)
    index.upsert(ids("i", n), vecs)
    return index, vecs


def test_satisfies_protocol(make_index: Factory) -> None:
    assert isinstance(make_index(DIM), VectorIndex)


def test_each_item_finds_itself_first_with_its_cosine(make_index: Factory) -> None:
    index, vecs = filled(make_index)
    hits = index.search(vecs[:20], k=5)
    for i, h in enumerate(hits):
        assert h.ids[0] == f"i{i}"
        assert h.scores[0] == pytest.approx(1.0, abs=1e-4)
        assert len(h) == 5
        assert np.all(np.diff(h.scores) <= 1e-6), "best first"
        expect = index.get(list(h.ids)) @ vecs[i]
        np.testing.assert_allclose(h.scores, expect, atol=1e-4)


def test_single_query_vector_is_accepted(make_index: Factory) -> None:
    index, vecs = filled(make_index)
    (h,) = index.search(vecs[3], k=1)
    assert h.ids == ("i3",)


def test_upsert_counts_and_updates_vectors(make_index: Factory) -> None:
    index, vecs = filled(make_index, 50)
    res = index.upsert(["i0", "new"], np.stack([vecs[10], vecs[11]]))
    assert (res.inserted, res.updated) == (1, 1)
    assert len(index) == 51
    np.testing.assert_allclose(index.get(["i0"])[0], vecs[10], atol=1e-6)
    top = index.search(vecs[0], k=1)[0].ids
    assert top != ("i0",), "the old vector of i0 must no longer be found"


def test_duplicate_ids_in_a_batch_last_wins(make_index: Factory) -> None:
    index = make_index(DIM)
    v = clustered(2, DIM)
    assert index.upsert(["a", "a"], v).inserted == 1
    assert len(index) == 1
    np.testing.assert_allclose(index.get(["a"])[0], v[1], atol=1e-6)


def test_cosine_normalises_and_get_returns_unit_vectors(make_index: Factory) -> None:
    index = make_index(DIM)
    v = clustered(3, DIM) * 7.0
    index.upsert(ids("x", 3), v)
    np.testing.assert_allclose(np.linalg.norm(index.get(ids("x", 3)), axis=1), 1.0, atol=1e-5)


def test_inner_product_metric_keeps_norms(make_index: Factory) -> None:
    index = make_index(DIM, metric="ip")
    v = clustered(30, DIM)
    v[5] *= 3.0
    index.upsert(ids("x", 30), v)
    (h,) = index.search(v[5], k=1)
    assert h.ids == ("x5",)
    assert h.scores[0] == pytest.approx(9.0, rel=1e-4)


def test_delete_removes_and_counts_unknown(make_index: Factory) -> None:
    index, vecs = filled(make_index, 50)
    res = index.delete(["i1", "i2", "nope", "i1"])
    assert (res.deleted, res.unknown) == (2, 2)
    assert len(index) == 48 and "i1" not in index
    found = {x for h in index.search(vecs, k=48) for x in h.ids}
    assert found == set(ids("i", 50)) - {"i1", "i2"}
    with pytest.raises(UnknownItemError, match="unknown"):
        index.get(["i1"])
    s = index.stats()
    assert (s.deletes_total, s.unknown_deletes_total) == (2, 2)


def test_deleted_id_can_come_back(make_index: Factory) -> None:
    index, vecs = filled(make_index, 30)
    index.delete(["i4"])
    index.upsert(["i4"], vecs[4:5])
    assert index.search(vecs[4], k=1)[0].ids == ("i4",)


def test_exclusions_respected_and_exactly_k(make_index: Factory) -> None:
    index, vecs = filled(make_index, 300)
    q = vecs[:10]
    plain = index.search(q, k=60)
    exclude = [set(h.ids[:50]) | {"not-an-item"} for h in plain]
    hits = index.search(q, k=10, exclude=exclude)
    ranked = index.search(q, k=300)  # k = every item: the full ranking
    overlap = []
    for h, ex, r in zip(hits, exclude, ranked, strict=True):
        assert len(h) == 10
        assert not ex & set(h.ids)
        expected = [x for x in r.ids if x not in ex][:10]
        overlap.append(len(set(h.ids) & set(expected)) / 10)
    assert np.mean(overlap) >= 0.95
    # mixed: some queries without exclusions
    hits = index.search(q[:2], k=5, exclude=[set(), {"i0"}])
    assert hits[0].ids[0] == "i0" and "i0" not in hits[1].ids


def test_fewer_than_k_eligible_returns_all_eligible(make_index: Factory) -> None:
    index, vecs = filled(make_index, 12)
    (h,) = index.search(vecs[0], k=50)
    assert sorted(h.ids) == sorted(ids("i", 12))
    (h,) = index.search(vecs[0], k=10, exclude=[set(ids("i", 5))])
    assert sorted(h.ids) == sorted(ids("i", 7, 5))
    (h,) = index.search(vecs[0], k=3, exclude=[set(ids("i", 12))])
    assert len(h) == 0


def test_empty_index_search(make_index: Factory) -> None:
    index = make_index(DIM)
    hits = index.search(clustered(2, DIM), k=5)
    assert [len(h) for h in hits] == [0, 0]


def test_availability(make_index: Factory) -> None:
    index, vecs = filled(make_index, 40)
    assert index.set_available(["i3", "i4", "nope"], False) == 2
    assert index.set_available(["i3"], False) == 0
    assert len(index) == 40 and "i3" in index
    found = {x for h in index.search(vecs, k=40) for x in h.ids}
    assert not {"i3", "i4"} & found and len(found) == 38
    np.testing.assert_allclose(index.get(["i3"])[0], vecs[3], atol=1e-6)
    # an upsert of an unavailable item changes its vector but keeps it unavailable
    index.upsert(["i4"], vecs[5:6])
    assert "i4" not in index.search(vecs[5], k=3)[0].ids
    np.testing.assert_allclose(index.get(["i4"])[0], vecs[5], atol=1e-6)
    assert index.stats().unavailable == 2 and index.stats().items == 38
    assert index.set_available(["i3", "i4"], True) == 2
    assert index.search(vecs[3], k=1)[0].ids == ("i3",)
    assert "i4" in index.search(vecs[5], k=2)[0].ids
    index.set_available(["i7"], False)
    assert index.delete(["i7"]).deleted == 1
    assert "i7" not in index and index.stats().unavailable == 0


def test_ids_and_is_available_follow_writes(make_index: Factory) -> None:
    index, vecs = filled(make_index, 30)
    assert sorted(index.ids()) == sorted(ids("i", 30))
    assert index.is_available("i3") and not index.is_available("nope")
    index.set_available(["i3"], False)
    assert not index.is_available("i3") and "i3" in index.ids(), "unavailable items are still live"
    index.delete(["i4"])
    assert "i4" not in index.ids() and not index.is_available("i4")
    index.upsert(["new"], vecs[:1])
    assert index.is_available("new") and len(index.ids()) == len(index) == 30
    copy = index.ids()
    index.delete(["new"])
    assert "new" in copy, "ids() returns a copy, not a live view"
    index.set_available(["i3"], True)
    assert index.is_available("i3")


def test_capacity_grows(make_index: Factory) -> None:
    index = make_index(DIM, initial_capacity=4)
    vecs = clustered(300, DIM)
    for start in range(0, 300, 37):
        index.upsert(ids("i", 300)[start : start + 37], vecs[start : start + 37])
    s = index.stats()
    assert s.items == 300 and s.capacity >= 300 and s.resizes_total >= 1
    assert index.search(vecs[299], k=1)[0].ids == ("i299",)


@pytest.mark.parametrize(
    ("ids_", "vectors", "error"),
    [
        (["a"], np.ones((1, DIM + 1)), "shape"),
        (["a"], np.ones(DIM), "shape"),
        (["a", "b"], np.stack([np.ones(DIM), np.full(DIM, np.nan)]), "NaN"),
        (["a"], np.full((1, DIM), np.inf), "NaN or inf"),
        (["a"], np.zeros((1, DIM)), "zero norm"),
        (["a"], [["x"] * DIM], "numeric"),
    ],
)
def test_bad_vectors_rejected_and_nothing_changes(
    make_index: Factory, ids_: list[str], vectors: object, error: str
) -> None:
    index = make_index(DIM)
    with pytest.raises(InvalidVectorError, match=error):
        index.upsert(ids_, vectors)  # type: ignore[arg-type]
    assert len(index) == 0
    assert issubclass(InvalidVectorError, IndexStoreError) and issubclass(InvalidVectorError, ValueError)


def test_bad_arguments(make_index: Factory) -> None:
    index, vecs = filled(make_index, 20)
    with pytest.raises(ValueError, match="ids but"):
        index.upsert(["a"], vecs[:2])
    with pytest.raises(InvalidItemIdError):
        index.upsert([7], vecs[:1])  # type: ignore[list-item]
    with pytest.raises(InvalidItemIdError):
        index.upsert([""], vecs[:1])
    with pytest.raises(InvalidItemIdError, match="single str"):
        index.delete("i1")
    with pytest.raises(ValueError, match="positive"):
        index.search(vecs[:1], k=0)
    with pytest.raises(ValueError, match="one collection"):
        index.search(vecs[:2], k=1, exclude=[set()])
    with pytest.raises(ValueError, match="not a str"):
        index.search(vecs[:1], k=1, exclude=["i1"])
    with pytest.raises(InvalidVectorError, match="queries"):
        index.search(np.full((1, DIM), np.nan), k=1)
    with pytest.raises(InvalidVectorError, match="shape"):
        index.search(np.ones((1, DIM - 1)), k=1)
    assert len(index) == 20


def test_stats_counters(make_index: Factory) -> None:
    index, vecs = filled(make_index, 20)
    index.upsert(["i0"], vecs[1:2])
    index.search(vecs[:3], k=2)
    s = index.stats()
    got = (s.dim, s.metric, s.items, s.inserts_total, s.updates_total, s.queries_total)
    assert got == (DIM, "cosine", 20, 20, 1, 3)
    assert s.memory_bytes > 20 * DIM * 4


def test_snapshot_round_trip(make_index: Factory, tmp_path: Path) -> None:
    index, vecs = filled(make_index, 120)
    index.delete(["i0", "i1"])
    index.set_available(["i2"], False)
    before = index.search(vecs[:30], k=10, exclude=[{"i5"}] * 30)
    snap = index.save(tmp_path / "snap", extra={"offsets": {"0": 17, "1": 4}})
    assert snap.parent == tmp_path / "snap"
    loaded, extra = load_like(index, tmp_path / "snap", dim=DIM, metric="cosine")
    assert extra == {"offsets": {"0": 17, "1": 4}}
    assert len(loaded) == 118 and "i0" not in loaded and not loaded.is_available("i2")
    assert sorted(loaded.ids()) == sorted(index.ids())
    after = loaded.search(vecs[:30], k=10, exclude=[{"i5"}] * 30)
    assert [h.ids for h in after] == [h.ids for h in before]
    np.testing.assert_allclose(loaded.get(["i2", "i3"]), index.get(["i2", "i3"]), atol=1e-6)
    loaded.upsert(["fresh"], vecs[0:1])
    loaded.set_available(["i2"], True)
    assert loaded.search(vecs[0], k=1)[0].ids == ("fresh",)
    assert loaded.search(vecs[2], k=1)[0].ids == ("i2",)
    assert loaded.stats().inserts_total == 121


def test_second_save_replaces_the_first(make_index: Factory, tmp_path: Path) -> None:
    index, _ = filled(make_index, 10)
    first = index.save(tmp_path, extra={"n": 1})
    index.upsert(["extra"], clustered(1, DIM, seed=5))
    second = index.save(tmp_path, extra={"n": 2})
    assert not first.exists() and second.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp", "snap-"))] == [second.name]
    loaded, extra = load_like(index, tmp_path)
    assert extra == {"n": 2} and "extra" in loaded


def test_snapshot_refusals(make_index: Factory, tmp_path: Path) -> None:
    index, _ = filled(make_index, 30)
    with pytest.raises(SnapshotError, match="no index snapshot"):
        load_like(index, tmp_path / "missing")
    with pytest.raises(TypeError, match="JSON"):
        index.save(tmp_path, extra={"bad": object()})
    assert not list(tmp_path.iterdir())
    snap = index.save(tmp_path)
    with pytest.raises(SnapshotError, match="dim=16 but 32"):
        load_like(index, tmp_path, dim=32)
    with pytest.raises(SnapshotError, match="metric"):
        load_like(index, tmp_path, metric="ip")
    meta = json.loads((snap / "meta.json").read_text())
    biggest = max(meta["files"], key=lambda f: meta["files"][f]["bytes"])
    data = bytearray((snap / biggest).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (snap / biggest).write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        load_like(index, tmp_path)
    (snap / biggest).write_bytes(bytes(data[:-10]))
    with pytest.raises(SnapshotError, match="truncated"):
        load_like(index, tmp_path)
    (snap / "meta.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="unreadable"):
        load_like(index, tmp_path)


def test_every_byte_of_the_metadata_is_covered(make_index: Factory, tmp_path: Path) -> None:
    """One digit flipped in the caller's extra (a resume offset: 196 -> 197) must be refused, not resumed from."""
    index, _ = filled(make_index, 10)
    snap = index.save(tmp_path, extra={"offsets": {"0": 196, "1": 40}})
    raw = (snap / "meta.json").read_bytes()
    assert raw.count(b":196") == 1
    (snap / "meta.json").write_bytes(raw.replace(b":196", b":197"))
    with pytest.raises(SnapshotError, match="metadata is corrupt"):
        load_like(index, tmp_path)
    for flip in (b'"dim":16', b'"kind":'):  # any other field: also refused (by the digest or by the check)
        (snap / "meta.json").write_bytes(raw.replace(flip, flip[:-1] + bytes([flip[-1] ^ 1]), 1))
        with pytest.raises(SnapshotError):
            load_like(index, tmp_path)
    (snap / "meta.json").write_bytes(raw)
    assert load_like(index, tmp_path)[1] == {"offsets": {"0": 196, "1": 40}}


def test_snapshot_of_another_kind_is_refused(make_index: Factory, tmp_path: Path) -> None:
    from streamrec.index import ExactIndex, HnswIndex

    index, _ = filled(make_index, 10)
    index.save(tmp_path)
    other = HnswIndex if isinstance(index, ExactIndex) else ExactIndex
    with pytest.raises(SnapshotError, match="index, not"):
        other.load(tmp_path)
