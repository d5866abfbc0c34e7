"""Worker metrics without a broker: the GC pause timer."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from streamrec.streams.metrics import GcPauseTimer, WorkerMetrics


def _count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value("streamrec_python_gc_pause_seconds_count", {"generation": generation})
    return 0.0 if value is None else value


def test_gc_pause_timer_times_collections_until_removed() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.prime(["events"])
    assert _count(registry, "2") == 0.0
    timer = GcPauseTimer(metrics.gc_pause)
    timer.install()
    timer.install()  # idempotent: one callback
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        timer.remove()
    assert _count(registry, "2") == 1.0
    assert _count(registry, "0") >= 1.0  # allocations may trigger more young collections
    total = registry.get_sample_value("streamrec_python_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and 0.0 < total < 10.0
    gc.collect(2)
    assert _count(registry, "2") == 1.0
