"""The per-event hot path, one micro-batch at a time: the Kafka side of :mod:`streamrec.streams.core`.

For a batch of Faust events (in arrival order):

1. **decode/validate** each record (on the loop; bad ones go to the dead-letter topic with the
   reason in headers and are counted -- the worker goes on);
2. **state read**: each user's session state from the Faust table (on the loop: table operations
   send changelog records through Faust's producer);
3. **compute**: ``RecommenderCore.step`` in ONE call on the bounded thread pool (session updates,
   one encoder call, the signals -- batched HNSW search, co-visitation, popularity -- blended, the
   exclusions, the live quality bookkeeping);
4. **state write + publish** (on the loop): the final state of each user to the table, one
   recommendation per valid event straight into the app's Kafka producer (see :class:`Output`), and the
   batch's co-visitation deltas to the publisher, which merges them for up to
   ``STREAMREC_COVISIT_DELTA_INTERVAL_MS`` before it sends them; each event is acked when the broker has
   acknowledged ALL the output it caused (its recommendation and the deltas; acks=all). Faust commits an
   offset only once every earlier event of the partition is acked, so an offset is committed only after
   the output it caused was produced; a failed delivery stops the worker instead of being skipped.

Every recommendation carries ``latency_ms`` with the stage breakdown; batch stages are charged to
every event of the batch, ``queue`` is the event's own wait between the consumer and the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.types import EventT

from streamrec.errors import StreamrecError
from streamrec.streams.core import RecommenderCore, StepResult
from streamrec.streams.covisit_sync import CovisitPublisher
from streamrec.streams.deadletter import dead_letter_record
from streamrec.streams.faust_app import set_current_event
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.schemas import (
    DeadLetterReason,
    Event,
    InvalidMessage,
    Recommendation,
    clamp_future_ts,
    decode_event,
)
from streamrec.streams.session import SessionState, SessionStateError
from streamrec.streams.state_cache import StateCache

log = logging.getLogger(__name__)


class DeliveryFailed(StreamrecError):
    """A recommendation or dead letter was not acknowledged by Kafka: the worker stops (its event was never
    acked, so it is processed again after the restart)."""


class ProcessingHalted(RuntimeError):
    """Too many events in a row failed on their own: the fault is systemic, not one poison pill; the worker
    stops (those events stay un-acked and are processed again after the restart)."""


class Output:
    """One output topic, produced to through the app's Kafka producer directly.

    Faust's ``Topic.send`` awaits ``app.maybe_start_producer()`` twice per message, and that wrapper yields to
    the event loop three times per call, so aiokafka's sender woke up between the messages of a batch and sent
    them in separate produce requests. Appending a whole batch without yielding lets them leave in one request
    per broker. Delivery is still awaited -- by the caller, through the returned future.
    """

    def __init__(self, app: Any, topic: str) -> None:
        self.app = app
        self.topic = topic
        self._started = False

    async def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        if not self._started:  # normally started with the app already; this is the once-only check
            await self.app.maybe_start_producer()
            self._started = True
        fut: asyncio.Future[Any] = await self.app.producer.send(
            self.topic,
            key,
            value,
            partition=partition,
            timestamp=None,
            headers=list(headers) if headers else None,
        )
        return fut


class HotPath:
    """Processes micro-batches of events; owned by the worker, driven by the EventBatcher."""

    def __init__(
        self,
        *,
        table: Any,
        recommendations: Output,
        dead_letter: Output,
        core: RecommenderCore,
        metrics: WorkerMetrics,
        pool: Executor,
        model_name: str,
        worker_name: str,
        covisit_out: CovisitPublisher | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_consecutive_errors: int = 100,
        state_cache: StateCache | None = None,
    ) -> None:
        self.table = table
        # decoded states of the users this worker wrote last (cleared by the worker on every rebalance)
        self.state_cache = state_cache if state_cache is not None else StateCache(0)
        self.recommendations = recommendations
        self.dead_letter = dead_letter
        self.core = core
        self.covisit_out = covisit_out
        self.metrics = metrics
        self.pool = pool
        self.model_name = model_name
        self.worker_name = worker_name
        self.clock = clock
        self.monotonic = monotonic
        self._dim = core.encoder.dim
        self._delivery_error: BaseException | None = None
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive_errors = 0

    # ------------------------------------------------------------------ the batch
    async def process(self, events: list[EventT[Any]]) -> None:
        """Process one micro-batch (see the module docstring); raises :class:`DeliveryFailed` once an earlier
        output was not delivered."""
        if self._delivery_error is not None:
            raise DeliveryFailed(f"an output was not delivered: {self._delivery_error!r}") from self._delivery_error
        m = self.metrics
        start_mono = self.monotonic()
        m.batch_size.observe(len(events))

        valid: list[tuple[EventT[Any], Event]] = []
        now_ms = int(self.clock() * 1000)
        for ev in events:
            msg = ev.message
            try:
                e = decode_event(
                    msg.value,
                    record_ts_ms=int((msg.timestamp or self.clock()) * 1000),
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    key=msg.key,
                )
            except InvalidMessage as exc:
                self._ack_on_delivery(ev, await self._send_dead_letter(ev, exc))
                continue
            except Exception as exc:  # a decoder bug: never stops the stream
                self._ack_on_delivery(ev, await self._send_processing_error(ev, exc, "decode"))
                continue
            clamped = clamp_future_ts(e, now_ms)
            if clamped is not e:
                m.clamped_timestamps.inc()
            valid.append((ev, clamped))
        decode_s = self.monotonic() - start_mono
        await self._serve_isolating(valid, start_mono, decode_s / max(1, len(events)))

    async def _serve_isolating(
        self, valid: list[tuple[EventT[Any], Event]], start_mono: float, decode_s_per_event: float
    ) -> None:
        """The safety net: serve ``valid``; if that raises, re-run the batch record by record, and dead-letter
        (``processing_error``) each record that still fails on its own. Kafka errors are not the record's
        fault and propagate (the worker stops); so does a run of ``max_consecutive_errors`` failing records
        with no success between them (something systemic, not a poison pill)."""
        if not valid:
            return
        try:
            await self._serve(valid, start_mono, decode_s_per_event)
        except (KafkaError, DeliveryFailed) as exc:
            if not isinstance(exc, MessageSizeTooLargeError):
                raise
            error: Exception = exc
        except Exception as exc:
            error = exc
        else:
            self._consecutive_errors = 0
            return
        if len(valid) > 1:
            log.warning(
                "a batch of %d events failed (%s: %s): re-running it event by event to isolate the cause",
                len(valid),
                type(error).__name__,
                error,
            )
            self.metrics.isolated_batches.inc()
            for one in valid:
                await self._serve_isolating([one], start_mono, decode_s_per_event)
            return
        ((ev, e),) = valid
        self._consecutive_errors += 1
        if self._consecutive_errors > self.max_consecutive_errors:
            raise ProcessingHalted(
                f"{self._consecutive_errors} events in a row failed (the last: {error!r}): stopping the worker "
                "rather than dead-lettering every event"
            ) from error
        log.error(
            "event %s of user %r at %s[%s]@%s failed: dead-lettered as processing_error",
            e.event_id[:64],
            e.user_id[:64],
            ev.message.topic,
            ev.message.partition,
            ev.message.offset,
            exc_info=error,
        )
        self._ack_on_delivery(ev, await self._send_processing_error(ev, error, "process"))

    async def _serve(
        self, valid: list[tuple[EventT[Any], Event]], start_mono: float, decode_s_per_event: float
    ) -> None:
        m = self.metrics
        outputs: list[tuple[EventT[Any], list[asyncio.Future[Any]]]] = []
        t = self.monotonic()
        generation = self.state_cache.generation
        states: dict[str, SessionState | None] = {}
        for ev, e in valid:
            if e.user_id not in states:
                states[e.user_id] = self._read_state(ev, e.user_id)
        state_read_s = self.monotonic() - t

        result: StepResult = await asyncio.get_running_loop().run_in_executor(
            self.pool, self.core.step, [e for _, e in valid], states
        )
        if result.texts_encoded:
            m.encoder_batch.observe(result.texts_encoded)
            m.encoder_seconds.observe(result.encode_s)

        t = self.monotonic()
        last_event_of_user = {e.user_id: ev for ev, e in valid}
        cache = self.state_cache
        for user_id, ev in last_event_of_user.items():
            set_current_event(ev)
            key, state = user_id.encode(), result.states[user_id]
            self.table[key] = state.to_json_bytes()
            cache.put(key, state, generation)
        state_s = state_read_s + self.monotonic() - t

        t = self.monotonic()
        now_ms = int(self.clock() * 1000)
        stages = {
            "decode": decode_s_per_event * 1000,
            "state": state_s * 1000,
            "encode": result.encode_s * 1000,
            "index": result.index_s * 1000,
        }
        strategy = self.core.name
        for (ev, e), outcome in zip(valid, result.outcomes, strict=True):
            queue_ms = _queue_ms(ev, start_mono)
            rec = Recommendation(
                user_id=e.user_id,
                event_id=e.event_id,
                items=tuple(outcome.items),
                model=self.model_name,
                event_ts=e.ts_ms,
                emitted_ts=now_ms,
                latency_ms={"queue": round(queue_ms, 3), **_rounded(stages)},
                strategy=strategy,
                fallback=outcome.fallback is not None,
            )
            own = [await self.recommendations.send(e.user_id.encode(), rec.to_json_bytes())]
            outputs.append((ev, own))
        shared: _SharedDelivery | None = None
        if self.covisit_out is not None and result.deltas:
            # every valid event of the batch caused them: one callback per future, not one per event and future
            shared = _SharedDelivery([await self.covisit_out.add(result.deltas)])  # counts what it sends
        publish_s = self.monotonic() - t

        done_mono = self.monotonic()
        done_ms = self.clock() * 1000
        # counters summed per batch, one inc per label set (each labels() call takes a lock and a dict lookup)
        events: Counter[tuple[str, str]] = Counter()
        fallbacks: Counter[str] = Counter()
        evaluated: Counter[str] = Counter()
        hits: Counter[str] = Counter()
        reciprocal: defaultdict[str, float] = defaultdict(float)
        e2e_event_ts, e2e_record_in, queue = (
            m.end_to_end.labels("event_ts"),
            m.end_to_end.labels("record_in"),
            m.stage.labels("queue"),
        )
        for (ev, e), outcome in zip(valid, result.outcomes, strict=True):
            etype = e.type.value
            kind = "duplicate" if outcome.duplicate else ("fallback" if outcome.fallback else "recommended")
            events[etype, kind] += 1
            if outcome.fallback:
                fallbacks[outcome.fallback] += 1
            if outcome.live_evaluated:
                evaluated[etype] += 1
                if outcome.live_rank is not None:
                    hits[etype] += 1
                    reciprocal[etype] += 1.0 / outcome.live_rank
            e2e_event_ts.observe(max(0.0, (done_ms - e.ts_ms) / 1000))
            time_in = getattr(ev.message, "time_in", None)
            if time_in is not None:
                e2e_record_in.observe(max(0.0, done_mono - time_in))
            queue.observe(_queue_ms(ev, start_mono) / 1000)
        for (etype, kind), n in events.items():
            m.events.labels(etype, kind).inc(n)
        for fallback, n in fallbacks.items():
            m.fallbacks.labels(fallback).inc(n)
        for etype, n in evaluated.items():
            m.live_evaluated.labels(etype).inc(n)
        for etype, n in hits.items():
            m.live_hits.labels(etype).inc(n)
            m.live_reciprocal_rank.labels(etype).inc(reciprocal[etype])
        m.recommendations.inc(len(valid))
        for stage, seconds in (
            ("decode", decode_s_per_event),
            ("state", state_s),
            ("encode", result.encode_s),
            ("index", result.index_s),
            ("publish", publish_s),
        ):
            m.stage.labels(stage).observe(seconds)
        for ev, futs in outputs:
            _AckWhenDelivered(self, ev, futs, shared)

    def _ack_on_delivery(self, ev: EventT[Any], fut: asyncio.Future[Any]) -> None:
        _AckWhenDelivered(self, ev, [fut])

    def _delivery_failed(self, ev: EventT[Any], exc: BaseException) -> None:
        if self._delivery_error is None:
            log.error(
                "output of %s[%s]@%s was not delivered: %r",
                ev.message.topic,
                ev.message.partition,
                ev.message.offset,
                exc,
            )
            self._delivery_error = exc

    # ------------------------------------------------------------------ helpers on the loop
    def _read_state(self, ev: EventT[Any], user_id: str) -> SessionState | None:
        key = user_id.encode()
        if self.state_cache.capacity:
            cached = self.state_cache.get(key)
            if cached is not None:
                return cached
        set_current_event(ev)
        raw = self.table.get(key)
        if raw is None:
            return None
        try:
            return SessionState.from_json_bytes(raw, dim=self._dim)
        except SessionStateError:
            # Only our own codec writes this table; a bad value means a bug or a foreign writer.
            log.exception("unreadable session state of user %r: starting a new session", user_id)
            self.metrics.dead_letters.labels("sessions", "corrupt_state").inc()
            return None

    async def _send_dead_letter(self, ev: EventT[Any], exc: InvalidMessage) -> asyncio.Future[Any]:
        msg = ev.message
        rec = dead_letter_record(
            msg.key,
            msg.value,
            exc,
            msg.topic,
            msg.partition,
            msg.offset,
            now_ms=int(self.clock() * 1000),
            source_ts_ms=None if msg.timestamp is None else int(msg.timestamp * 1000),
            worker=self.worker_name,
        )
        fut = await self.dead_letter.send(rec.key, rec.value, rec.headers)
        self.metrics.dead_letters.labels(msg.topic, exc.reason.value).inc()
        self.metrics.events.labels("invalid", "dead_letter").inc()
        return fut

    async def _send_processing_error(self, ev: EventT[Any], exc: BaseException, where: str) -> asyncio.Future[Any]:
        detail = f"{type(exc).__module__}.{type(exc).__qualname__} in {where}: {str(exc)[:300]}"
        return await self._send_dead_letter(ev, InvalidMessage(DeadLetterReason.PROCESSING_ERROR, detail))


class _AckWhenDelivered:
    """Acks ``ev`` once every future of its outputs succeeded, and the ``shared`` outputs it caused with the
    rest of its batch; a failure leaves it un-acked and stops the worker at the next batch (runs on the loop,
    as done-callbacks)."""

    __slots__ = ("ev", "hotpath", "pending")

    def __init__(
        self,
        hotpath: HotPath,
        ev: EventT[Any],
        futs: Sequence[asyncio.Future[Any]],
        shared: _SharedDelivery | None = None,
    ) -> None:
        self.hotpath, self.ev, self.pending = hotpath, ev, len(futs) + (shared is not None)
        for fut in futs:
            fut.add_done_callback(self._done)
        if shared is not None:
            shared.waiters.append(self)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self.failed(exc)
        else:
            self.delivered()

    def delivered(self) -> None:
        if self.pending > 0:
            self.pending -= 1
            if self.pending == 0:
                self.ev.ack()

    def failed(self, exc: BaseException) -> None:
        if self.pending >= 0:
            self.pending = -1  # never acked
            self.hotpath._delivery_failed(self.ev, exc)


class _SharedDelivery:
    """Outputs that every event of a batch caused (its co-visitation deltas): done once all their futures
    succeeded, then each waiting :class:`_AckWhenDelivered` counts it as one delivered output; a failure
    fails them all. Registered waiters are complete before any callback runs (callbacks go through the loop)."""

    __slots__ = ("pending", "waiters")

    def __init__(self, futs: Sequence[asyncio.Future[Any]]) -> None:
        self.pending = len(futs)
        self.waiters: list[_AckWhenDelivered] = []
        for fut in futs:
            fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        if self.pending < 0:
            return
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self.pending = -1
            for w in self.waiters:
                w.failed(exc)
            return
        self.pending -= 1
        if self.pending == 0:
            for w in self.waiters:
                w.delivered()


def _queue_ms(ev: EventT[Any], batch_start_mono: float) -> float:
    time_in = getattr(ev.message, "time_in", None)
    return 0.0 if time_in is None else max(0.0, (batch_start_mono - time_in) * 1000)


def _rounded(stages: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stages.items()}
