"""When the co-visitation owner publishes its changed rows: every flush interval of wall time, or of the events'
own time (a replay, a backlog), never more often than its minimum spacing; or when too many rows wait."""

from __future__ import annotations

from typing import Any

from streamrec.streams.covisit import CovisitConfig, CovisitDelta, CovisitGraph
from streamrec.streams.covisit_sync import CovisitOwner, EventClock


def owner(interval: float = 5.0, spacing: float = 0.25, max_dirty: int = 10_000) -> CovisitOwner:
    unused: Any = None  # nothing below touches Kafka
    return CovisitOwner(
        bootstrap="127.0.0.1:1",
        group_id="g",
        deltas_topic="d",
        rows_out=unused,
        graph=CovisitGraph(CovisitConfig()),
        replica=unused,
        pool=None,
        flush_interval_s=interval,
        min_flush_spacing_s=spacing,
        max_dirty=max_dirty,
    )


def test_a_live_stream_flushes_once_per_interval_of_wall_time() -> None:
    o = owner()
    assert not o._flush_due(wall_s=1.0, event_s=1.0)  # event time moves with wall time: not yet
    assert not o._flush_due(wall_s=4.9, event_s=4.9)
    assert o._flush_due(wall_s=5.0, event_s=5.0)
    assert o._flush_due(wall_s=5.0, event_s=0.0)  # no event time moved (EventClock.moved before any): wall time rules


def test_a_replay_flushes_once_its_events_span_an_interval_but_not_more_often_than_the_spacing() -> None:
    o = owner()
    assert o._flush_due(wall_s=0.3, event_s=3600.0)  # an hour of old events in 0.3 s
    assert not o._flush_due(wall_s=0.1, event_s=3600.0)  # the minimum spacing holds
    assert not o._flush_due(wall_s=0.3, event_s=4.0)  # less than an interval of event time
    assert owner(interval=0.1)._flush_due(wall_s=0.1, event_s=0.0)  # spacing never exceeds the interval


def test_too_many_waiting_rows_flush_at_once() -> None:
    o = owner(max_dirty=3)
    o._dirty.update({"a", "b"})
    assert not o._flush_due(wall_s=0.0, event_s=0.0)
    o._dirty.add("c")
    assert o._flush_due(wall_s=0.0, event_s=0.0)


def deltas_at(*times: float) -> list[CovisitDelta]:
    return [CovisitDelta(f"item-{n}", t) for n, t in enumerate(times)]


def test_the_event_clock_counts_forward_progress_only() -> None:
    clock = EventClock()
    assert clock.moved() == 0.0
    clock.saw(deltas_at(1000.0, 1002.0))
    assert clock.moved() == 2.0  # from the oldest of the first deltas
    clock.saw(deltas_at(1003.0))
    assert clock.moved() == 3.0
    clock.mark()  # a flush
    assert clock.moved() == 0.0
    clock.saw(deltas_at(10.0, 500.0))  # late events (an offline phone's): no progress
    assert clock.moved() == 0.0
    clock.saw(deltas_at(1003.5))
    assert clock.moved() == 0.5
    clock.saw([])
    assert clock.moved() == 0.5


def test_an_event_from_a_clock_far_ahead_moves_the_clock_once() -> None:
    clock = EventClock()
    clock.saw(deltas_at(1000.0))
    clock.saw(deltas_at(1000.0 + 3600))  # an hour ahead: one early flush is due
    assert clock.moved() == 3600.0
    clock.mark()
    for t in (1001.0, 1005.0, 1010.0):  # then the stream's own events move nothing until they catch up
        clock.saw(deltas_at(t))
        assert clock.moved() == 0.0
