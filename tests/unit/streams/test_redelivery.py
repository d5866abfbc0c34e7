from streamrec.streams.redelivery import RedeliveryGuard


def test_a_record_handed_over_again_in_the_same_assignment_is_dropped() -> None:
    guard = RedeliveryGuard()
    # Faust's fetcher delivers 13..20 before its seek to the committed offset (13) completes, then 13..25 again
    first = [guard.first_time("events-0", o) for o in range(13, 21)]
    again = [guard.first_time("events-0", o) for o in range(13, 26)]
    assert all(first)
    assert again == [False] * 8 + [True] * 5
    assert guard.dropped == 8
    assert guard.high("events-0") == 25


def test_partitions_are_independent_and_a_revocation_forgets() -> None:
    guard = RedeliveryGuard()
    assert guard.first_time("events-0", 100)
    assert guard.first_time("events-1", 5)  # another partition: its own offsets
    assert not guard.first_time("events-0", 100)
    guard.forget({"events-0"})
    # a new assignment: the records from the committed offset on are processed again (at-least-once)
    assert guard.first_time("events-0", 90)
    assert not guard.first_time("events-1", 5)
    assert guard.high("events-0") == 90


class _Message:
    def __init__(self, tp: str, offset: int) -> None:
        self.tp, self.offset, self.acked = tp, offset, False


def test_a_dropped_copy_is_marked_done_and_the_original_is_left_to_ack() -> None:
    guard = RedeliveryGuard()
    original, copy, later = _Message("events-0", 199), _Message("events-0", 199), _Message("events-0", 200)
    assert guard.admit(original)
    assert not guard.admit(copy)
    assert copy.acked  # a graceful stop does not wait for it
    assert not original.acked  # still in flight: only its own delivery acks the offset
    assert guard.admit(later)
    assert not later.acked
