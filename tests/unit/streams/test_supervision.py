"""The shutdown watchdog and the health/metrics server."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from streamrec.streams.supervision import HealthServer, ShutdownWatchdog


def test_the_watchdog_exits_after_the_timeout_once_armed() -> None:
    exited: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        done.set()

    dog = ShutdownWatchdog(exit=fake_exit)
    assert not dog.armed
    t0 = time.monotonic()
    dog.arm(0.2, 1, "test")
    dog.arm(0.01, 5, "ignored: only the first arming counts")
    assert done.wait(5)
    assert exited == [1] and time.monotonic() - t0 >= 0.19


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_server_serves_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    counter = Counter("streamrec_test_things_total", "things", registry=registry)
    state = {"healthy": True, "ready": False}
    server = HealthServer(
        registry, "127.0.0.1", 0, healthy=lambda: state["healthy"], ready=lambda: state["ready"], max_age_s=0.0
    )
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        counter.inc(3)
        status, body = _get(base + "/metrics")
        assert status == 200 and b"streamrec_test_things_total 3.0" in body
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz")[0] == 503
        state["ready"] = True
        assert _get(base + "/readyz")[0] == 200
        state["healthy"] = False
        assert _get(base + "/healthz") == (503, b"failed\n")
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_concurrent_scrapes_all_succeed_and_share_one_rendering() -> None:
    registry = CollectorRegistry()
    Counter("streamrec_test_x_total", "x", registry=registry).inc()
    server = HealthServer(registry, "127.0.0.1", 0, healthy=lambda: True, ready=lambda: True, max_age_s=60)
    renders = 0
    original = server.metrics_body

    def counting() -> bytes:
        nonlocal renders
        before = server._rendered_at
        body = original()
        renders += server._rendered_at != before
        return body

    server.metrics_body = counting  # type: ignore[method-assign]
    server.start()
    try:
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda _: _get(f"http://127.0.0.1:{server.port}/metrics"), range(200)))
        assert all(status == 200 and b"streamrec_test_x_total" in body for status, body in results)
        assert renders == 1
    finally:
        server.stop()


class _FakeStream:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def noack(self) -> _FakeStream:
        return self

    async def events(self) -> Any:
        raise self.error
        yield  # an async generator


async def test_a_failed_component_turns_health_red_arms_the_watchdog_and_crashes_the_worker() -> None:
    """StreamWorker.fail and the agent's guard, on a worker object built without Kafka (only what they use)."""
    from streamrec.streams.batcher import EventBatcher
    from streamrec.streams.metrics import WorkerMetrics
    from streamrec.streams.redelivery import RedeliveryGuard
    from streamrec.streams.settings import WorkerSettings
    from streamrec.streams.worker import COMPONENTS, StreamWorker

    armed: list[tuple[float, int]] = []
    crashed: list[BaseException] = []

    class Dog(ShutdownWatchdog):
        def arm(self, timeout_s: float, exit_code: int, why: str) -> None:
            armed.append((timeout_s, exit_code))

    worker = object.__new__(StreamWorker)
    worker.settings = WorkerSettings(shutdown_timeout_s=7)
    worker.metrics = WorkerMetrics(CollectorRegistry())
    worker.watchdog = Dog()
    worker.failed = None
    worker.batcher = EventBatcher(lambda batch: asyncio.sleep(0))
    worker.replica = SimpleNamespace(ready=True, wait_ready=lambda: asyncio.sleep(0))  # type: ignore[assignment]
    worker.covisit_replica = None
    worker._assigned = True  # the consumer group assigned its partitions
    worker.redelivery = RedeliveryGuard()

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    worker.crash = crash  # type: ignore[method-assign]
    for c in COMPONENTS:
        worker.metrics.component_up.labels(c).set(1)
    assert worker.healthy() and worker.ready()

    boom = RuntimeError("agent bug")
    task = asyncio.create_task(worker._agent(_FakeStream(boom)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not task.done()  # it waits for the shutdown to cancel it, instead of being restarted by Faust
    task.cancel()
    assert worker.failed == "events_agent" and crashed == [boom] and armed == [(7.0, 1)]
    assert not worker.healthy() and not worker.ready()
    assert worker.metrics.healthy._value.get() == 0
    assert worker.metrics.component_up.labels("events_agent")._value.get() == 0
    await worker.fail("hot_path", RuntimeError("second"))  # only the first failure counts
    assert len(crashed) == 1
