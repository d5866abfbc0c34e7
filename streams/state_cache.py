"""The decoded session states of recently active users, so that an event does not decode its user's state.

The session table holds each user's state as JSON bytes (RocksDB + changelog: the durable copy). Reading it back
for every event costs a RocksDB read and a JSON decode on the event loop (60-130 us for a state of 3-14 KB
on the reference machines), although the worker wrote those very bytes itself, from a state it still had.
This cache keeps the last state the hot path wrote for each user, decoded, bounded to ``capacity`` users
(least recently used dropped first; ``capacity`` 0 disables it).

Why a hit is the table's value: within one assignment of its partitions the worker is the only writer of
their users' states (Faust: the table is partitioned like the events topic; standby replicas apply the
changelog only for partitions the worker does not serve), and the hot path writes the table and this cache
together. A rebalance can change that -- a partition served by another worker in between, a standby
promoted -- so the worker clears the cache whenever partitions are revoked or assigned (aiokafka's rebalances
are eager: every rebalance revokes the whole assignment first), and a batch that was under way during a clear
does not fill it (``put`` names the ``generation`` the batch started in). States are immutable (tuples, read-only
vectors, ``dataclasses.replace``), so a cached state can be handed to the core as it is.
"""

from __future__ import annotations

from streamrec.streams.session import SessionState

__all__ = ["StateCache"]


class StateCache:
    """``user key -> decoded SessionState``, the ``capacity`` most recently used."""

    __slots__ = ("_states", "capacity", "generation", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"state cache capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self._states: dict[bytes, SessionState] = {}
        self.generation = 0  # +1 per clear
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: bytes) -> SessionState | None:
        """The cached state (now the most recently used), or None (counted as a miss)."""
        state = self._states.pop(key, None)
        if state is None:
            self.misses += 1
            return None
        self._states[key] = state  # re-inserted: dicts keep insertion order, the oldest is first
        self.hits += 1
        return state

    def put(self, key: bytes, state: SessionState, generation: int) -> None:
        """Cache the state just written to the table by a batch that started in ``generation``
        (ignored when the cache was cleared since)."""
        if not self.capacity or generation != self.generation:
            return
        states = self._states
        states.pop(key, None)
        states[key] = state
        if len(states) > self.capacity:
            del states[next(iter(states))]

    def clear(self) -> None:
        """Forget every state (a rebalance: another worker may have written some of them since)."""
        self._states.clear()
        self.generation += 1
