"""EmbeddingCache and CachedEncoder: hits, misses, LRU eviction, order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from streamrec.encoders import CachedEncoder, EmbeddingCache, EncoderError, TextEncoder


class CountingEncoder:
    """Deterministic fake: a unit vector derived from the text; records every batch it is given."""

    dim = 8
    name = "counting"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.batches.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(abs(hash(t)) % (2**32))
            v = rng.normal(size=self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


def test_fake_is_a_text_encoder() -> None:
    assert isinstance(CountingEncoder(), TextEncoder)
    assert isinstance(CachedEncoder(CountingEncoder()), TextEncoder)


def test_hits_and_misses_are_counted() -> None:
    inner = CountingEncoder()
    enc = CachedEncoder(inner, capacity=10)
    first = enc.encode(["a", "b"])
    assert enc.stats.hits == 0 and enc.stats.misses == 2
    second = enc.encode(["b", "c", "a"])
    assert enc.stats.hits == 2 and enc.stats.misses == 3
    assert inner.batches == [["a", "b"], ["c"]]
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])
    assert enc.stats.hit_ratio == pytest.approx(2 / 5)


def test_repeats_within_a_call_are_encoded_once_and_order_is_kept() -> None:
    inner = CountingEncoder()
    enc = CachedEncoder(inner)
    out = enc.encode(["x", "y", "x", "x"])
    assert inner.batches == [["x", "y"]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], inner.encode(["x"])[0])
    assert not np.array_equal(out[0], out[1])


def test_lru_evicts_the_least_recently_used() -> None:
    cache = EmbeddingCache(capacity=2)
    v = np.ones(3, dtype=np.float32)
    cache.put("a", v)
    cache.put("b", v)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", v)
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats.evictions == 1 and len(cache) == 2


def test_cached_vectors_cannot_be_corrupted_by_callers() -> None:
    enc = CachedEncoder(CountingEncoder())
    out = enc.encode(["a"])
    out[0, :] = 0.0  # the caller's array is its own
    again = enc.encode(["a"])
    assert np.linalg.norm(again[0]) == pytest.approx(1.0)
    stored = enc.cache.get("a")
    assert stored is not None and not stored.flags.writeable


def test_empty_and_bad_input() -> None:
    enc = CachedEncoder(CountingEncoder())
    assert enc.encode([]).shape == (0, 8)
    with pytest.raises(EncoderError):
        enc.encode("not a list")
    with pytest.raises(EncoderError):
        EmbeddingCache(0)
