"""HNSW-specific behaviour: recall against the exact oracle through a catalogue's life, slot reuse, the ghost
trap, exactly-k under heavy deletion, and snapshot failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.index import ExactIndex, HnswIndex, SnapshotError, VectorIndex
from streamrec.index import snapshot as snapshot_mod
from tests.unit.index.conftest import clustered, ids

DIM = 48


def recall(
    got: VectorIndex, oracle: VectorIndex, q: np.ndarray, k: int = 10, exclude: list[set[str]] | None = None
) -> float:
    a = got.search(q, k, exclude=exclude)
    b = oracle.search(q, k, exclude=exclude)
    assert all(len(x) == len(y) for x, y in zip(a, b, strict=True)), "exactly k whenever k are eligible"
    return float(np.mean([len(set(x.ids) & set(y.ids)) / max(1, len(y)) for x, y in zip(a, b, strict=True)]))


def apply(indexes: tuple[VectorIndex, ...], op: str, *args: object) -> None:
    for index in indexes:
        getattr(index, op)(*args)


def test_recall_through_adds_updates_deletes_resize_and_save_load(tmp_path: Path) -> None:
    hnsw = HnswIndex(DIM, initial_capacity=64, ef=32)
    both = (hnsw, ExactIndex(DIM))
    data = clustered(4600, DIM, clusters=40, spread=0.6, seed=1)
    q = clustered(200, DIM, clusters=40, spread=0.6, seed=1)[:200] + 0.05 * np.random.default_rng(2).standard_normal(
        (200, DIM)
    ).astype(np.float32)
    names = ids("i", 4000)
    for start in range(0, 4000, 250):
        apply(both, "upsert", names[start : start + 250], data[start : start + 250])
    assert hnsw.stats().resizes_total >= 5
    assert recall(hnsw, both[1], q) >= 0.95
    capacity = hnsw.stats().capacity
    rng = np.random.default_rng(3)
    upd = rng.choice(4000, 600, replace=False)
    apply(both, "upsert", [names[i] for i in upd], data[4000 + rng.integers(0, 600, 600)])
    gone = [names[i] for i in rng.choice(4000, 600, replace=False)]
    apply(both, "delete", gone)
    apply(both, "upsert", ids("n", 600), data[4000:4600])
    apply(both, "set_available", [names[i] for i in rng.choice(4000, 100, replace=False)], False)
    s = hnsw.stats()
    assert s.capacity == capacity and s.items + s.unavailable == 4000, "deleted slots were reused, no growth"
    assert recall(hnsw, both[1], q) >= 0.95
    near = [set(h.ids[:50]) for h in both[1].search(q, 50)]
    assert recall(hnsw, both[1], q, exclude=near) >= 0.95
    hnsw.save(tmp_path)
    loaded, _ = HnswIndex.load(tmp_path)
    assert recall(loaded, both[1], q) >= 0.95
    assert recall(loaded, both[1], q, k=50) >= 0.95


def test_churn_reuses_slots_and_keeps_capacity() -> None:
    index = HnswIndex(16, initial_capacity=500)
    vecs = clustered(500, 16)
    index.upsert(ids("a", 500), vecs)
    for r in range(10):
        index.delete(ids("a" if r == 0 else f"r{r - 1}-", 200))
        index.upsert(ids(f"r{r}-", 200), clustered(200, 16, seed=r + 10))
    s = index.stats()
    assert (s.capacity, s.items, s.deleted_slots, s.resizes_total) == (500, 500, 0, 0)


def test_updates_and_reinserts_leave_no_ghost() -> None:
    index = HnswIndex(16, initial_capacity=8)
    base = clustered(100, 16)
    index.upsert(ids("b", 100), base)
    target = base[0]
    for r in range(30):
        index.upsert(["x"], target[None, :] + 0.01 * r)
        if r % 3 == 0:
            index.delete(["x"])
            index.upsert(["filler" + str(r)], base[r : r + 1])  # consumes the tombstone
    index.delete(["x"])
    everything = index.search(target, k=len(index))[0].ids
    assert "x" not in everything and len(everything) == len(index)
    s = index.stats()
    assert index._g.get_current_count() == s.items + s.deleted_slots


def test_reenabling_after_its_slot_was_reused() -> None:
    index = HnswIndex(16, initial_capacity=50)
    vecs = clustered(51, 16)
    index.upsert(ids("c", 50), vecs[:50])
    index.set_available(["c7"], False)
    index.upsert(["new"], vecs[50:51])  # full index: reuses c7's tombstoned slot
    assert index.stats().capacity == 50
    assert index.set_available(["c7"], True) == 1
    assert index.search(vecs[7], k=1)[0].ids == ("c7",)
    np.testing.assert_allclose(index.get(["c7"])[0], vecs[7], atol=1e-6)
    assert index.search(vecs[50], k=1)[0].ids == ("new",)
    assert index.stats().inserts_total == 51


def test_exactly_k_with_most_items_deleted() -> None:
    index = HnswIndex(16, m=4, ef_construction=16, ef=10)
    vecs = clustered(2000, 16, spread=0.2)
    index.upsert(ids("d", 2000), vecs)
    index.delete(ids("d", 1985))
    for h in index.search(vecs[:50], k=10):
        assert len(h) == 10 and all(x >= "d1985" or len(x) < 5 for x in h.ids)
        assert set(h.ids) <= set(ids("d", 15, 1985))
    oracle = ExactIndex(16)
    oracle.upsert(ids("d", 15, 1985), vecs[1985:])
    assert recall(index, oracle, vecs[:50]) >= 0.95


def test_filter_and_overfetch_agree_on_exclusions() -> None:
    vecs = clustered(3000, 32, spread=0.5)
    a, b, exact = HnswIndex(32, ef=64), HnswIndex(32, ef=64, exclusion="filter"), ExactIndex(32)
    for index in (a, b, exact):
        index.upsert(ids("e", 3000), vecs)
    q = vecs[:100]
    near = [set(h.ids[:50]) for h in exact.search(q, 50)]
    assert recall(a, exact, q, exclude=near) >= 0.95
    assert recall(b, exact, q, exclude=near) >= 0.95


def test_load_overrides_runtime_settings_and_checks_the_id_map(tmp_path: Path) -> None:
    index = HnswIndex(16, ef=20)
    index.upsert(ids("f", 30), clustered(30, 16))
    snap = index.save(tmp_path)
    loaded, _ = HnswIndex.load(tmp_path, ef=80, exclusion="filter")
    assert (loaded.ef, loaded.exclusion, loaded.m) == (80, "filter", 16)
    # an id map that disagrees with the graph (checksum recomputed, so only the consistency check can catch it)
    items = json.loads((snap / "items.json").read_text())
    items["live"] = items["live"][:-1]
    (snap / "items.json").write_text(json.dumps(items))
    meta = json.loads((snap / "meta.json").read_text())
    meta["files"]["items.json"] = {
        "sha256": snapshot_mod._sha256(snap / "items.json"),
        "bytes": (snap / "items.json").stat().st_size,
    }
    meta["meta_sha256"] = snapshot_mod.meta_digest(meta)
    (snap / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SnapshotError, match="disagree"):
        HnswIndex.load(tmp_path)


def test_failed_save_keeps_the_previous_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = HnswIndex(16)
    index.upsert(ids("g", 20), clustered(20, 16))
    index.save(tmp_path, extra={"v": 1})
    index.upsert(ids("h", 20), clustered(20, 16, seed=9))

    def crash(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snapshot_mod, "write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path, extra={"v": 2})
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    loaded, extra = HnswIndex.load(tmp_path)
    assert extra == {"v": 1} and len(loaded) == 20


def test_current_pointing_nowhere_is_refused(tmp_path: Path) -> None:
    (tmp_path / "CURRENT").write_text("snap-gone\n")
    with pytest.raises(SnapshotError, match="not a snapshot"):
        HnswIndex.load(tmp_path)


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="exclusion"):
        HnswIndex(8, exclusion="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric"):
        HnswIndex(8, metric="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        HnswIndex(0)


def test_updates_append_until_the_deleted_budget_then_reuse_slots() -> None:
    index = HnswIndex(16, initial_capacity=1000, max_deleted_fraction=0.1, write_chunk=1000)
    vecs = clustered(700, 16, seed=4)
    index.upsert(ids("u", 500), vecs[:500])
    index.upsert(ids("u", 30), vecs[500:530])  # cheap path: tombstone + append with a fresh label
    assert (index.stats().deleted_slots, index._g.get_current_count()) == (30, 530)
    index.upsert(ids("u", 30, 30), vecs[530:560])  # 60 tombstones would pass 10% of 560: update in place
    assert (index.stats().deleted_slots, index._g.get_current_count()) == (30, 530)
    index.upsert(ids("u", 30, 60), vecs[560:590])
    index.upsert(ids("v", 10), vecs[590:600])  # few tombstones: inserts append
    assert (index.stats().deleted_slots, index._g.get_current_count()) == (30, 540)
    index.delete(ids("v", 5) + ids("u", 20, 400))
    index.upsert(ids("w", 10), vecs[600:610])  # 55 tombstones >= 10% of 540: inserts fill them
    s = index.stats()
    assert (s.deleted_slots, s.items, s.capacity, s.inserts_total, s.updates_total) == (45, 495, 1000, 520, 90)
    assert index._g.get_current_count() == 540
    for j in (0, 45, 75):
        assert index.search(vecs[500 + j], k=1)[0].ids == (f"u{j}",)
    np.testing.assert_allclose(index.get(["u0", "u89"]), vecs[[500, 589]], atol=1e-6)
    strict = HnswIndex(16, initial_capacity=100, max_deleted_fraction=0.0)
    strict.upsert(ids("s", 50), vecs[:50])
    strict.upsert(ids("s", 50), vecs[50:100])
    assert strict.stats().deleted_slots == 0 and strict._g.get_current_count() == 50


def test_full_scan_below_the_threshold_is_exact_and_follows_every_write() -> None:
    vecs = clustered(400, 32, spread=0.5, seed=3)
    scan, exact = HnswIndex(32, full_scan_below=300), ExactIndex(32)
    apply((scan, exact), "upsert", ids("s", 250), vecs[:250])
    q = vecs[300:340]
    near = [set(h.ids[:20]) for h in exact.search(q, 20)]

    def same() -> None:
        for a, b in zip(scan.search(q, 10, exclude=near), exact.search(q, 10, exclude=near), strict=True):
            assert a.ids == b.ids
            assert np.allclose(a.scores, b.scores, atol=1e-5)

    same()
    assert scan.stats().full_scans_total == 40
    apply((scan, exact), "upsert", ["s0", "s1"], vecs[340:342])  # changed vectors
    same()
    (top,) = scan.search(vecs[340], 1)
    assert top.ids == ("s0",)
    apply((scan, exact), "delete", ["s0", "s5", "unknown"])
    same()
    apply((scan, exact), "set_available", ["s1"], False)
    same()
    assert "s1" not in {x for h in scan.search(vecs[341:342], 50) for x in h.ids}
    apply((scan, exact), "set_available", ["s1"], True)
    same()
    # exactly the eligible items when fewer than k remain
    (few,) = scan.search(q[0], 300, exclude=[set(scan.ids()[:240])])
    assert len(few) == len(scan) - 240
    # above the threshold the graph answers (and the scan counter stops)
    apply((scan, exact), "upsert", ids("t", 100), vecs[250:350])
    before = scan.stats().full_scans_total
    assert recall(scan, exact, q, exclude=near) >= 0.95
    assert scan.stats().full_scans_total == before


def test_full_scan_setting_survives_load(tmp_path: Path) -> None:
    index = HnswIndex(16, full_scan_below=10)
    index.upsert(ids("g", 8), clustered(8, 16))
    index.save(tmp_path)
    loaded, _ = HnswIndex.load(tmp_path, full_scan_below=10)
    loaded.search(clustered(3, 16, seed=9), 5)
    assert loaded.stats().full_scans_total == 3
    with pytest.raises(ValueError, match="full_scan_below"):
        HnswIndex(16, full_scan_below=-1)


@pytest.mark.parametrize("width", [5, 10, 300, 641, 1682, 5000])
@pytest.mark.parametrize("kk", [1, 10, 37])
def test_two_level_top_columns_selects_the_largest(width: int, kk: int) -> None:
    from streamrec.index.hnsw import _top_columns

    rng = np.random.default_rng(width * kk)
    scores = rng.standard_normal((7, width)).astype(np.float32)
    scores[rng.random((7, width)) < 0.3] = -np.inf  # excluded items
    scores[0, :] = -np.inf
    scores[0, : min(3, width)] = [1.0, 2.0, 3.0][: min(3, width)]  # fewer finite scores than kk
    if kk >= width:
        return
    top = _top_columns(scores, kk)
    assert top.shape == (7, kk)
    padded = np.pad(scores, ((0, 0), (0, 64)), constant_values=-np.inf)
    got = np.sort(np.take_along_axis(padded, top, 1), axis=1)
    want = np.sort(scores, axis=1)[:, -kk:]
    assert np.array_equal(got, want)
    assert all(len(set(row)) == kk for row in top.tolist())  # no column twice


def test_get_reads_the_full_scan_copy_and_never_a_stale_one() -> None:
    index = HnswIndex(16, full_scan_below=1000)
    vecs = clustered(30, 16, seed=3)
    index.upsert(ids("s", 20), vecs[:20])
    before = index.get(["s3", "s11"])  # from hnswlib: no scan built yet
    index.search(vecs[0], k=3)  # builds the scan's copy of every vector
    assert index._scan is not None
    np.testing.assert_array_equal(index.get(["s3", "s11"]), before)  # the same float32 values, bit for bit
    index.upsert(["s3"], vecs[25:26])  # a write drops the copy
    index.search(vecs[0], k=3)
    np.testing.assert_allclose(index.get(["s3"])[0], vecs[25] / np.linalg.norm(vecs[25]), atol=1e-6)
    index.set_available(["s11"], False)  # still stored: get answers for it
    np.testing.assert_array_equal(index.get(["s11"]), before[1:])
