"""The decoded-state cache: LRU bound and generations (the hot path with it: test_hotpath_delivery.py)."""

from __future__ import annotations

from streamrec.streams.session import SessionState
from streamrec.streams.state_cache import StateCache

S = {n: SessionState(n_events=n) for n in range(5)}


def state(n: int) -> SessionState:
    return S[n]


def test_least_recently_used_is_dropped_first_and_a_read_refreshes() -> None:
    cache = StateCache(2)
    cache.put(b"a", state(1), cache.generation)
    cache.put(b"b", state(2), cache.generation)
    assert cache.get(b"a") is state(1)  # a is now the most recent
    cache.put(b"c", state(3), cache.generation)
    assert cache.get(b"b") is None and len(cache) == 2
    assert cache.get(b"a") is state(1) and cache.get(b"c") is state(3)
    assert (cache.hits, cache.misses) == (3, 1)
    cache.put(b"a", state(4), cache.generation)  # overwritten in place
    assert cache.get(b"a") is state(4) and len(cache) == 2


def test_capacity_zero_keeps_nothing_and_a_put_from_before_a_clear_is_ignored() -> None:
    off = StateCache(0)
    off.put(b"a", state(1), off.generation)
    assert off.get(b"a") is None and len(off) == 0
    cache = StateCache(4)
    started = cache.generation
    cache.put(b"a", state(1), started)
    cache.clear()  # a rebalance
    assert cache.get(b"a") is None
    cache.put(b"b", state(2), started)  # a batch that started before the clear
    assert len(cache) == 0
    cache.put(b"b", state(2), cache.generation)
    assert cache.get(b"b") is state(2)
