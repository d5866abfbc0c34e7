"""Records Faust hands the agent twice within one assignment: recognised by offset, never processed twice.

faust-streaming 0.15 resumes the stream partitions *before* it seeks them to their committed offsets when a
recovery completes (``Recovery.on_recovery_completed``: ``consumer.resume_partitions(...)``, then
``await consumer.perform_seek()``, whose ``seek_to_committed`` is a broker round trip). With records already
waiting -- a worker restarting after a crash, with a backlog -- its fetcher thread can deliver records from
the committed offset on during that round trip; the seek then moves the position (and Faust's own
``_read_offset`` filter) back to the committed offset, and the same records arrive again. Observed on a
restart after SIGKILL: one partition's 40 events per user were applied twice (the session state's
duplicate window, the last ``max_event_ids`` event ids per user, is shorter than such a run).

Within one assignment of a partition, every record this worker handed to the hot path has its effect in
this worker's table (written before its offset can be acked), so a record at or below the highest offset
already handed is a re-delivery and is dropped: the worker marks the copy done without acking its offset
(the original acks it once its output is delivered) so that a graceful stop does not wait for it. A revoked partition
forgets its offsets: after a new assignment, records from the committed offset are legitimately processed
again (at-least-once; the session state's event-id window recognises those). Upstream: faust-streaming/faust#216
(the same ordering in ``_resume_streams``, fixed there) and #596 (an open race in the same recovery step).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["RedeliveryGuard"]


class RedeliveryGuard:
    """The highest offset handed on, per topic-partition, in the current assignment."""

    __slots__ = ("_high", "dropped")

    def __init__(self) -> None:
        self._high: dict[Any, int] = {}
        self.dropped = 0

    def first_time(self, tp: Any, offset: int) -> bool:
        """True for a record not handed on before in this assignment (and remember it); False for a
        re-delivery (counted in ``dropped``)."""
        high = self._high.get(tp)
        if high is not None and offset <= high:
            self.dropped += 1
            return False
        self._high[tp] = offset
        return True

    def admit(self, message: Any) -> bool:
        """For a Faust message (``tp``, ``offset``, ``acked``): True to hand it on; False for a re-delivery,
        which is marked done without acking its offset: the original acks that offset once its output is
        delivered (acking the copy now could let a commit pass an original still in flight), and Faust's
        graceful stop (``Consumer.wait_empty``) no longer waits for the copy -- which it would, until the
        shutdown timeout, when the copy is the last record of its partition (Faust's stream still holds it)."""
        if self.first_time(message.tp, message.offset):
            return True
        message.acked = True
        return False

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions revoked: their next records start a new assignment."""
        for tp in tps:
            self._high.pop(tp, None)

    def high(self, tp: Any) -> int | None:
        return self._high.get(tp)
