"""Open-loop load generator and receipt-side measurement for the end-to-end benchmark.

One :class:`Collector` per output topic consumes every partition in its own task and stamps each
record at receipt (before decoding it), so a slow reader never hides queueing. :func:`run_step`
sends events on a fixed schedule (event i at t0 + i / rate, never waiting for answers), records the
scheduled and the actual send time of each, waits for the answers to drain and summarises.

Latency of an event = receipt time of its answer - actual send time (``time.time``, same host, same
clock; the event's ``ts`` is that send time in whole ms). ``from_schedule`` (receipt - scheduled
time) is also reported: it includes the generator's own lag, so coordinated omission cannot hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.streams.delivery import all_delivered
from streamrec.streams.movielens import ReplayEvent
from streamrec.streams.schemas import decode_recommendation

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Arrival:
    recv_ms: float
    stages_ms: dict[str, float] | None = None  # the worker's latency_ms (None for the echo)
    emitted_ms: float | None = None  # when the worker produced it (its clock = ours: same host)


Parse = Callable[[bytes, float], tuple[str, Arrival]]


def parse_recommendation(value: bytes, recv_ms: float) -> tuple[str, Arrival]:
    rec = decode_recommendation(value)
    return rec.event_id, Arrival(recv_ms, dict(rec.latency_ms), float(rec.emitted_ts))


def parse_echo(value: bytes, recv_ms: float) -> tuple[str, Arrival]:
    return str(json.loads(value)["event_id"]), Arrival(recv_ms)


class Collector:
    """Reads every partition of ``topic`` from the beginning in an owned task; ``arrivals[event_id]``."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, parse: Parse, client_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.bootstrap, self.topic, self.partitions, self.parse = bootstrap, topic, partitions, parse
        self.client_kwargs = dict(client_kwargs or {})  # security (KafkaSecurity.aiokafka_kwargs)
        self.arrivals: dict[str, Arrival] = {}
        self.duplicates = 0
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.client_kwargs,
        )
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._run(), name=f"collect-{self.topic}")

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000.0  # stamped before any decoding
            for records in batch.values():
                for r in records:
                    try:
                        event_id, arrival = self.parse(r.value, now_ms)
                    except Exception:
                        self.errors += 1
                        continue
                    if event_id in self.arrivals:
                        self.duplicates += 1
                    else:
                        self.arrivals[event_id] = arrival

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for(self, event_ids: Sequence[str], timeout_s: float) -> int:
        """Wait until every id arrived or the timeout; returns how many are still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._task is not None and self._task.done():
                self._task.result()  # the reader died: raise its error
            missing = sum(1 for e in event_ids if e not in self.arrivals)
            if missing == 0 or time.monotonic() >= deadline:
                return missing
            await asyncio.sleep(0.05)


def summary(xs: Sequence[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0:
        return {}
    out = {f"p{p:g}": float(np.percentile(a, p)) for p in PERCENTILES}
    out["max"] = float(a.max())
    out["mean"] = float(a.mean())
    return out


@dataclass
class StepResult:
    offered_rate: float
    duration_s: float
    warmup_s: float
    sent: int
    measured: int  # events scheduled after the warm-up
    received: int  # of the measured events
    missing: int
    achieved_rate: float  # answers received per second inside the measurement window
    send_rate: float  # events actually sent per second inside the window
    latency_ms: dict[str, float]
    from_schedule_ms: dict[str, float]
    generator_lag_ms: dict[str, float]
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)  # latency by send time (timeline())
    latencies: list[float] = field(default_factory=list, repr=False)  # not written to JSON

    @property
    def saturated(self) -> bool:
        p99 = self.latency_ms.get("p99", float("inf"))
        return self.missing > 0 or p99 > 1000.0 or self.achieved_rate < 0.9 * self.offered_rate

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "latencies"}
        d["saturated"] = self.saturated
        if self.latencies:  # the latency distribution, for CDF plots
            qs = [*range(0, 90, 5), *range(90, 100), 99.5, 99.9, 100]
            d["quantiles_ms"] = {"q": qs, "ms": [float(x) for x in np.percentile(self.latencies, qs)]}
        return d


def _stage_breakdown(measured: list[tuple[float, Arrival]]) -> dict[str, dict[str, float]]:
    """Medians and p99 of the worker's stages, plus the time outside them (Kafka legs, Faust, publish)."""
    stages: dict[str, list[float]] = {}
    outside: list[float] = []
    to_emit: list[float] = []
    emit_to_recv: list[float] = []
    for send_ms, a in measured:
        if a.stages_ms is None:
            continue
        for k, v in a.stages_ms.items():
            stages.setdefault(k, []).append(v)
        outside.append(a.recv_ms - send_ms - sum(a.stages_ms.values()))
        if a.emitted_ms is not None:
            to_emit.append(a.emitted_ms - send_ms)
            emit_to_recv.append(a.recv_ms - a.emitted_ms)
    out = {k: {"p50": float(np.median(v)), "p99": float(np.percentile(v, 99))} for k, v in stages.items()}
    if outside:
        out["outside_stages"] = {"p50": float(np.median(outside)), "p99": float(np.percentile(outside, 99))}
        out["send_to_emitted"] = {"p50": float(np.median(to_emit)), "p99": float(np.percentile(to_emit, 99))}
        out["emitted_to_receipt"] = {
            "p50": float(np.median(emit_to_recv)),
            "p99": float(np.percentile(emit_to_recv, 99)),
        }
    return out


TIMELINE_BUCKET_MS = 250.0


def timeline(
    measured: Sequence[tuple[float, Arrival]], start_ms: float, bucket_ms: float = TIMELINE_BUCKET_MS
) -> dict[str, Any]:
    """Latency by send time: for each ``bucket_ms`` of send time from ``start_ms``, the answers' count, median and
    maximum, and the maximum of the worker's ``index`` stage (the batch step) and ``queue`` stage. A tail made of
    periodic spikes (a flush interval, a GC) shows here as evenly spaced bad buckets, where quantiles cannot
    tell it from noise spread over the run."""
    buckets: dict[int, list[tuple[float, float, float]]] = {}
    for send_ms, a in measured:
        k = int((send_ms - start_ms) // bucket_ms)
        st = a.stages_ms or {}
        buckets.setdefault(k, []).append((a.recv_ms - send_ms, st.get("index", 0.0), st.get("queue", 0.0)))
    keys = sorted(buckets)
    rows = [np.asarray(buckets[k]) for k in keys]
    return {
        "bucket_ms": bucket_ms,
        "start_epoch_ms": round(start_ms, 1),  # t_s = 0 on the wall clock: lines the buckets up with other samples
        "t_s": [round(k * bucket_ms / 1000.0, 3) for k in keys],
        "n": [len(r) for r in rows],
        "p50_ms": [round(float(np.median(r[:, 0])), 2) for r in rows],
        "max_ms": [round(float(r[:, 0].max()), 2) for r in rows],
        "max_index_ms": [round(float(r[:, 1].max()), 2) for r in rows],
        "max_queue_ms": [round(float(r[:, 2].max()), 2) for r in rows],
    }


async def run_step(
    producer: Any,
    collector: Collector,
    topic: str,
    events: Sequence[ReplayEvent],
    *,
    rate: float,
    duration_s: float,
    warmup_s: float,
    drain_s: float,
) -> StepResult:
    """Send ``rate * duration_s`` events on the open-loop schedule, wait up to ``drain_s`` for answers."""
    n = int(rate * duration_s)
    if n > len(events):
        raise ValueError(f"{n} events needed, {len(events)} given")
    sched_ms = np.empty(n)
    send_ms = np.empty(n)
    futures: list[asyncio.Future[Any]] = []
    mono0 = time.monotonic() + 0.02
    wall0 = time.time() * 1000.0 + 20.0
    for i in range(n):
        delay = mono0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ev = events[i]
        now_ms = time.time() * 1000.0
        sched_ms[i] = wall0 + 1000.0 * i / rate
        send_ms[i] = now_ms
        futures.append(await producer.send(topic, ev.payload(int(now_ms)), key=ev.key))
    # Every event delivered to the broker (raises otherwise). Not asyncio.gather: over a step's thousands of
    # futures it held this loop -- where the collector stamps the step's last answers -- for 15-150 ms.
    await all_delivered(futures)
    first = int(np.ceil(warmup_s * rate))
    ids = [events[i].event_id for i in range(first, n)]
    missing = await collector.wait_for(ids, drain_s)

    win_lo, win_hi = wall0 + warmup_s * 1000.0, wall0 + duration_s * 1000.0
    step_ids = {events[i].event_id for i in range(n)}
    in_window = sum(1 for e in step_ids if (a := collector.arrivals.get(e)) and win_lo <= a.recv_ms < win_hi)
    window_s = duration_s - warmup_s
    lat, from_sched, measured = [], [], []
    for i in range(first, n):
        a = collector.arrivals.get(events[i].event_id)
        if a is None:
            continue
        lat.append(a.recv_ms - send_ms[i])
        from_sched.append(a.recv_ms - sched_ms[i])
        measured.append((float(send_ms[i]), a))
    sent_in_window = int(np.count_nonzero((send_ms >= win_lo) & (send_ms < win_hi)))
    return StepResult(
        offered_rate=rate,
        duration_s=duration_s,
        warmup_s=warmup_s,
        sent=n,
        measured=n - first,
        received=len(lat),
        missing=missing,
        achieved_rate=in_window / window_s,
        send_rate=sent_in_window / window_s,
        latency_ms=summary(lat),
        from_schedule_ms=summary(from_sched),
        generator_lag_ms=summary(send_ms[first:] - sched_ms[first:]),
        stages_ms=_stage_breakdown(measured),
        timeline=timeline(measured, win_lo),
        latencies=lat,
    )


async def prime(
    producer: Any, collector: Collector, topic: str, events: Sequence[ReplayEvent], timeout_s: float
) -> float:
    """Send a few events and wait for all their answers (partitions assigned, paths warm); seconds taken."""
    t = time.monotonic()
    for ev in events:
        await producer.send_and_wait(topic, ev.payload(int(time.time() * 1000)), key=ev.key)
    missing = await collector.wait_for([e.event_id for e in events], timeout_s)
    if missing:
        raise TimeoutError(
            f"{missing} of {len(events)} priming events got no answer on {collector.topic} within {timeout_s:.0f} s"
        )
    return time.monotonic() - t
