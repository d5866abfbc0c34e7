"""The hot path acks an event only when Kafka acknowledged its output, and stops after a failed delivery."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamrec.streams.hotpath import DeliveryFailed, HotPath, Output
from streamrec.streams.metrics import WorkerMetrics


class FakeEvent:
    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(topic="events", partition=0, offset=offset)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def hotpath() -> HotPath:
    return HotPath(
        table=None, recommendations=None, dead_letter=None,  # type: ignore[arg-type]
        encoder=SimpleNamespace(dim=4), index=None, titles={}, strategy=None,  # type: ignore[arg-type]
        popularity=None, metrics=WorkerMetrics(CollectorRegistry()), pool=None,  # type: ignore[arg-type]
        k=10, model_name="m", worker_name="w",
    )


async def test_ack_follows_delivery_and_a_failure_stops_the_next_batch() -> None:
    hp = hotpath()
    loop = asyncio.get_running_loop()
    ok, pending, failed = FakeEvent(1), FakeEvent(2), FakeEvent(3)
    futs = [loop.create_future() for _ in range(3)]
    for ev, fut in zip((ok, pending, failed), futs, strict=True):
        fut.add_done_callback(lambda f, ev=ev: hp._ack_when_delivered(ev, f))  # type: ignore[misc]
    assert not ok.acked  # handed to the producer is not enough
    futs[0].set_result(object())
    futs[2].set_exception(RuntimeError("broker said no"))
    await asyncio.sleep(0)
    assert ok.acked and not pending.acked and not failed.acked
    with pytest.raises(DeliveryFailed, match="broker said no"):
        await hp.process([])


async def test_output_appends_to_the_app_producer_without_faust_topic_send() -> None:
    sent: list[tuple[Any, ...]] = []
    started = 0

    class Producer:
        async def send(self, topic: str, key: bytes | None, value: bytes | None, **kw: Any) -> asyncio.Future[Any]:
            sent.append((topic, key, value, kw["headers"]))
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            return fut

    class App:
        producer = Producer()

        async def maybe_start_producer(self) -> None:
            nonlocal started
            started += 1

    out = Output(App(), "recs")
    f1 = await out.send(b"u1", b"v1")
    await out.send(b"u2", b"v2", [("reason", b"x")])
    assert sent == [("recs", b"u1", b"v1", None), ("recs", b"u2", b"v2", [("reason", b"x")])]
    assert started == 1 and not f1.done()  # the caller awaits delivery through the future
