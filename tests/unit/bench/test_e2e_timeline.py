"""The benchmark's latency timeline: buckets of send time with their count, median and maxima."""

from __future__ import annotations

from benchmarks.e2e_load import Arrival, timeline


def test_a_periodic_spike_lands_in_its_own_bucket() -> None:
    start = 1_000_000.0
    measured = []
    for i in range(100):  # 100 events over 1 s, 10 ms latency, except a 200 ms stall at 500-520 ms
        send = start + 10.0 * i
        lat = 200.0 if 500 <= 10 * i < 520 else 10.0
        measured.append((send, Arrival(send + lat, {"index": lat / 2, "queue": 1.0})))
    t = timeline(measured, start, bucket_ms=250.0)
    assert t["t_s"] == [0.0, 0.25, 0.5, 0.75]
    assert t["n"] == [25, 25, 25, 25]
    assert t["max_ms"] == [10.0, 10.0, 200.0, 10.0]
    assert t["p50_ms"] == [10.0, 10.0, 10.0, 10.0]
    assert t["max_index_ms"][2] == 100.0 and t["max_queue_ms"] == [1.0] * 4


def test_the_echo_has_no_stages_and_empty_buckets_are_left_out() -> None:
    measured = [(0.0, Arrival(3.0)), (900.0, Arrival(905.0))]
    t = timeline(measured, 0.0, bucket_ms=250.0)
    assert t["t_s"] == [0.0, 0.75] and t["max_ms"] == [3.0, 5.0] and t["max_index_ms"] == [0.0, 0.0]


def test_no_answers_no_buckets() -> None:
    assert timeline([], 0.0) == {
        "bucket_ms": 250.0,
        "start_epoch_ms": 0.0,
        "t_s": [],
        "n": [],
        "p50_ms": [],
        "max_ms": [],
        "max_index_ms": [],
        "max_queue_ms": [],
    }
