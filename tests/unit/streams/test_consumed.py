"""The consumed set: bounded, compact, stable across processes, exact for what it holds."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.streams.consumed import ConsumedSet, ConsumedSetError, item_hash


def test_the_hash_is_stable_across_processes() -> None:
    # blake2b-64 little-endian, not Python's salted hash(): a state written by one worker reads the same elsewhere
    import hashlib

    assert item_hash("sku-1") == int.from_bytes(hashlib.blake2b(b"sku-1", digest_size=8).digest(), "little")


def test_added_items_are_members_and_the_oldest_are_forgotten_at_the_bound() -> None:
    s = ConsumedSet()
    for i in range(10):
        s = s.with_added([f"i{i}"], max_items=6)
    assert len(s) == 6
    assert [f"i{i}" in s for i in range(10)] == [False] * 4 + [True] * 6
    again = s.with_added(["i9", "i5"], max_items=6)  # already there: same set, nothing evicted
    assert again is s
    assert list(s.contains_many(["i0", "i7", "nope", "i9"])) == [False, True, False, True]


def test_the_sorted_view_stays_consistent_with_the_order() -> None:
    rng = np.random.default_rng(0)
    s = ConsumedSet()
    ref: list[str] = []
    for n in rng.integers(0, 300, size=2000):
        item = f"x{n}"
        s = s.with_added([item], max_items=100)
        if item not in ref:
            ref.append(item)
        ref = ref[-100:]
    assert {f"x{n}" for n in range(300) if f"x{n}" in s} == set(ref)
    back = ConsumedSet.from_text(s.to_text())  # read back: its sorted view is rebuilt
    assert [f"x{n}" in back for n in range(300)] == [f"x{n}" in s for n in range(300)]


def test_codec_is_base64_of_8_byte_hashes_and_refuses_anything_else() -> None:
    s = ConsumedSet().with_added(["a", "b", "c"], max_items=10)
    text = s.to_text()
    assert len(text) == 32  # 3 x 8 bytes in base64
    assert ConsumedSet.from_text(text).contains_many(["a", "b", "c", "d"]).tolist() == [True, True, True, False]
    for bad in ("!!!", "YWJj"):  # not base64; 3 bytes
        with pytest.raises(ConsumedSetError):
            ConsumedSet.from_text(bad)


def test_four_thousand_items_fit_in_44_kib_of_state() -> None:
    s = ConsumedSet().with_added((f"item-{i}" for i in range(5000)), max_items=4096)
    assert len(s) == 4096 and len(s.to_text()) <= 44 * 1024
    assert "item-4999" in s and "item-0" not in s
