"""One open-loop step of the end-to-end benchmark, against a fake producer and echo: every event sent on
schedule, each delivery awaited (a failed one fails the step), the answers counted and timed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from benchmarks.e2e_load import Arrival, Collector, parse_echo, run_step
from streamrec.streams.movielens import ReplayEvent
from streamrec.streams.schemas import EventType


def _events(n: int) -> list[ReplayEvent]:
    return [ReplayEvent(f"u{i % 7}", EventType.VIEW, f"i{i}", None, f"e{i}", i, 4.0) for i in range(n)]


class _EchoProducer:
    """Delivers each event after 1 ms and answers it on ``collector`` 2 ms after the send; ``fail_at``: the
    delivery of that event fails instead."""

    def __init__(self, collector: Collector, fail_at: int | None = None) -> None:
        self.collector = collector
        self.fail_at = fail_at
        self.sent = 0

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.sent == self.fail_at:
            loop.call_later(0.001, fut.set_exception, RuntimeError("not delivered"))
        else:
            loop.call_later(0.001, fut.set_result, None)
        event_id = json.loads(value)["event_id"]

        def answer() -> None:
            self.collector.arrivals[event_id] = Arrival(time.time() * 1000.0)

        loop.call_later(0.002, answer)
        self.sent += 1
        return fut


async def test_a_step_sends_on_schedule_and_counts_every_answer() -> None:
    collector = Collector("unused", "out", 1, parse_echo)
    producer = _EchoProducer(collector)
    result = await run_step(
        producer, collector, "in", _events(100), rate=200.0, duration_s=0.5, warmup_s=0.1, drain_s=5.0
    )
    assert producer.sent == result.sent == 100
    assert result.measured == 80 and result.received == 80 and result.missing == 0
    assert result.timeline["n"] and sum(result.timeline["n"]) == 80
    assert min(result.latencies) >= 1.5  # answered 2 ms after each send, never before it


async def test_a_failed_delivery_fails_the_step() -> None:
    collector = Collector("unused", "out", 1, parse_echo)
    with pytest.raises(RuntimeError, match="not delivered"):
        await run_step(
            _EchoProducer(collector, fail_at=37),
            collector,
            "in",
            _events(60),
            rate=300.0,
            duration_s=0.2,
            warmup_s=0.0,
            drain_s=1.0,
        )
