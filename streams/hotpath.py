"""The per-event hot path, one micro-batch at a time.

For a batch of Faust events (in arrival order):

1. **decode/validate** each record (on the loop; bad ones go to the dead-letter topic with the
   reason in headers and are counted -- the worker goes on);
2. **state read**: each user's session state from the Faust table (on the loop: table operations
   send changelog records through Faust's producer);
3. **compute**, in ONE call on the bounded thread pool: item vectors from the index, the session
   strategy's plan for every event, one encoder call for every text still needed (cached), the
   session updates in event order (a user's later event sees the earlier one), one batched index
   search with per-event exclusions, the popularity fallback where no session vector exists;
4. **state write + publish** (on the loop): the final state of each user to the table, one
   recommendation per valid event, straight into the app's Kafka producer (see :class:`Output`); each
   event is acked when the broker has acknowledged its output (acks=all). Faust commits an offset
   only once every earlier event of the partition is acked, so an offset is committed only after the
   output it caused was produced; a failed delivery stops the worker instead of being skipped.

Every recommendation carries ``latency_ms`` with the stage breakdown; batch stages are charged to
every event of the batch, ``queue`` is the event's own wait between the consumer and the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.types import EventT

from streamrec.encoders import TextEncoder
from streamrec.errors import StreamrecError
from streamrec.index import SearchHits, UnknownItemError, VectorIndex
from streamrec.streams.deadletter import dead_letter_record
from streamrec.streams.faust_app import set_current_event
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import (
    DeadLetterReason,
    Event,
    EventType,
    InvalidMessage,
    Recommendation,
    clamp_future_ts,
    decode_event,
)
from streamrec.streams.session import SessionPlan, SessionState, SessionStateError, SessionStrategy, exclusions

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


@dataclass
class _Outcome:
    """What the pool computed for one valid event."""

    items: list[tuple[str, float]] = field(default_factory=list)
    fallback: str | None = None  # reason, when the popularity fallback answered
    duplicate: bool = False


@dataclass
class _BatchResult:
    outcomes: list[_Outcome]
    states: dict[str, SessionState]
    encode_s: float
    index_s: float
    texts_encoded: int


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

    async def send(self, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        if not self._started:  # normally started with the app already; this is the once-only check
            await self.app.maybe_start_producer()
            self._started = True
        fut: asyncio.Future[Any] = await self.app.producer.send(
            self.topic, key, value, partition=None, timestamp=None, headers=list(headers) if headers else None,
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
        encoder: TextEncoder,
        index: VectorIndex,
        titles: dict[str, str],
        strategy: SessionStrategy,
        popularity: RecentPopularity,
        metrics: WorkerMetrics,
        pool: Executor,
        k: int,
        model_name: str,
        worker_name: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_consecutive_errors: int = 100,
    ) -> None:
        self.table = table
        self.recommendations = recommendations
        self.dead_letter = dead_letter
        self.encoder = encoder
        self.index = index
        self.titles = titles
        self.strategy = strategy
        self.popularity = popularity
        self.metrics = metrics
        self.pool = pool
        self.k = k
        self.model_name = model_name
        self.worker_name = worker_name
        self.clock = clock
        self.monotonic = monotonic
        self._dim = encoder.dim
        self._filler = _unit(np.random.default_rng(7).standard_normal(self._dim))
        self._delivery_error: BaseException | None = None
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive_errors = 0

    # ------------------------------------------------------------------ the batch
    async def process(self, events: list[EventT[Any]]) -> None:
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
                    msg.value, record_ts_ms=int((msg.timestamp or self.clock()) * 1000), topic=msg.topic,
                    partition=msg.partition, offset=msg.offset, key=msg.key,
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
            log.warning("a batch of %d events failed (%s: %s): re-running it event by event to isolate the cause",
                        len(valid), type(error).__name__, error)
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
        log.error("event %s of user %r at %s[%s]@%s failed: dead-lettered as processing_error",
                  e.event_id[:64], e.user_id[:64], ev.message.topic, ev.message.partition, ev.message.offset,
                  exc_info=error)
        self._ack_on_delivery(ev, await self._send_processing_error(ev, error, "process"))

    async def _serve(
        self, valid: list[tuple[EventT[Any], Event]], start_mono: float, decode_s_per_event: float
    ) -> None:
        m = self.metrics
        delivered: list[tuple[EventT[Any], asyncio.Future[Any]]] = []
        t = self.monotonic()
        states: dict[str, SessionState | None] = {}
        for ev, e in valid:
            if e.user_id not in states:
                states[e.user_id] = self._read_state(ev, e.user_id)
        state_read_s = self.monotonic() - t

        result = await asyncio.get_running_loop().run_in_executor(
            self.pool, self._compute, [e for _, e in valid], states
        )
        if result.texts_encoded:
            m.encoder_batch.observe(result.texts_encoded)
            m.encoder_seconds.observe(result.encode_s)

        t = self.monotonic()
        last_event_of_user = {e.user_id: ev for ev, e in valid}
        for user_id, ev in last_event_of_user.items():
            set_current_event(ev)
            self.table[user_id.encode()] = result.states[user_id].to_json_bytes()
        state_s = state_read_s + self.monotonic() - t

        t = self.monotonic()
        now_ms = int(self.clock() * 1000)
        stages = {
            "decode": decode_s_per_event * 1000,
            "state": state_s * 1000,
            "encode": result.encode_s * 1000,
            "index": result.index_s * 1000,
        }
        for (ev, e), outcome in zip(valid, result.outcomes, strict=True):
            queue_ms = _queue_ms(ev, start_mono)
            rec = Recommendation(
                user_id=e.user_id, event_id=e.event_id, items=tuple(outcome.items), model=self.model_name,
                event_ts=e.ts_ms, emitted_ts=now_ms, latency_ms={"queue": round(queue_ms, 3), **_rounded(stages)},
                strategy=self.strategy.name, fallback=outcome.fallback is not None,
            )
            delivered.append((ev, await self.recommendations.send(e.user_id.encode(), rec.to_json_bytes())))
        publish_s = self.monotonic() - t

        done_mono = self.monotonic()
        done_ms = self.clock() * 1000
        for (ev, e), outcome in zip(valid, result.outcomes, strict=True):
            kind = "duplicate" if outcome.duplicate else ("fallback" if outcome.fallback else "recommended")
            m.events.labels(e.type.value, kind).inc()
            if outcome.fallback:
                m.fallbacks.labels(outcome.fallback).inc()
            m.end_to_end.labels("event_ts").observe(max(0.0, (done_ms - e.ts_ms) / 1000))
            time_in = getattr(ev.message, "time_in", None)
            if time_in is not None:
                m.end_to_end.labels("record_in").observe(max(0.0, done_mono - time_in))
            m.stage.labels("queue").observe(_queue_ms(ev, start_mono) / 1000)
        m.recommendations.inc(len(valid))
        for stage, seconds in (("decode", decode_s_per_event), ("state", state_s),
                               ("encode", result.encode_s), ("index", result.index_s), ("publish", publish_s)):
            m.stage.labels(stage).observe(seconds)
        for ev, fut in delivered:
            self._ack_on_delivery(ev, fut)

    def _ack_on_delivery(self, ev: EventT[Any], fut: asyncio.Future[Any]) -> None:
        fut.add_done_callback(partial(self._ack_when_delivered, ev))

    def _ack_when_delivered(self, ev: EventT[Any], fut: asyncio.Future[Any]) -> None:
        """Ack ``ev`` once its output is acknowledged; a failed delivery leaves it un-acked and stops the
        worker at the next batch (runs on the loop, as a done-callback)."""
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is None:
            ev.ack()
            return
        if self._delivery_error is None:
            log.error("output of %s[%s]@%s was not delivered: %r", ev.message.topic, ev.message.partition,
                      ev.message.offset, exc)
            self._delivery_error = exc

    # ------------------------------------------------------------------ helpers on the loop
    def _read_state(self, ev: EventT[Any], user_id: str) -> SessionState | None:
        set_current_event(ev)
        raw = self.table.get(user_id.encode())
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
            msg.key, msg.value, exc, msg.topic, msg.partition, msg.offset,
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

    # ------------------------------------------------------------------ the pool's part
    def _compute(self, events: Sequence[Event], states: dict[str, SessionState | None]) -> _BatchResult:
        t0 = time.perf_counter()
        item_vectors = self._item_vectors({e.item_id for e in events if e.item_id is not None})

        plans: list[SessionPlan] = []
        planning = dict(states)
        for e in events:
            title = self.titles.get(e.item_id) if e.item_id is not None else None
            plan = self.strategy.plan(
                planning[e.user_id], e, title=title, item_vector_known=e.item_id in item_vectors
            )
            planning[e.user_id] = plan.state
            plans.append(plan)
        texts = list(dict.fromkeys(t for p in plans for t in p.texts))
        t1 = time.perf_counter()
        rows = self.encoder.encode(texts) if texts else np.empty((0, self._dim), np.float32)
        row_of = {text: i for i, text in enumerate(texts)}
        encode_s = time.perf_counter() - t1

        current: dict[str, SessionState | None] = dict(states)
        queries: list[Vector | None] = []
        excludes: list[set[str]] = []
        outcomes: list[_Outcome] = []
        config = self.strategy.config
        for e, plan in zip(events, plans, strict=True):
            update = self.strategy.apply(
                current[e.user_id], plan,
                item_vector=item_vectors.get(e.item_id) if e.item_id is not None else None,
                text_vectors=rows[[row_of[t] for t in plan.texts]] if plan.texts else rows[:0],
            )
            current[e.user_id] = update.state
            queries.append(update.query)
            excludes.append(exclusions(update.state, config))
            outcomes.append(_Outcome(duplicate=update.duplicate))
            if not update.duplicate and e.item_id is not None and e.type is not EventType.SEARCH:
                self.popularity.add(e.item_id, config.weight_of(e.type), e.ts_ms / 1000)

        t2 = time.perf_counter()
        with_vector = [(i, q) for i, q in enumerate(queries) if q is not None]
        hits: dict[int, SearchHits] = {}
        if with_vector:
            found = self.index.search(
                np.stack([q for _, q in with_vector]), self.k, exclude=[excludes[i] for i, _ in with_vector]
            )
            hits = dict(zip([i for i, _ in with_vector], found, strict=True))
        now_s = self.clock()
        for i, outcome in enumerate(outcomes):
            h = hits.get(i)
            if h is not None and len(h) > 0:
                outcome.items = [(item, round(float(s), 5)) for item, s in zip(h.ids, h.scores, strict=True)]
            else:
                outcome.fallback = "no_session_vector" if h is None else "no_neighbours"
                outcome.items = self._fallback(excludes[i], now_s)
        index_s = (time.perf_counter() - t2) + (t1 - t0)
        final = {u: s for u, s in current.items() if s is not None}
        return _BatchResult(outcomes, final, encode_s, index_s, len(texts))

    def _item_vectors(self, ids: set[str]) -> dict[str, Vector]:
        known = [i for i in ids if i in self.index]
        if not known:
            return {}
        try:
            vectors = self.index.get(known)
        except UnknownItemError:  # deleted between the check and the get: fetch one by one
            out: dict[str, Vector] = {}
            for i in known:
                try:
                    out[i] = self.index.get([i])[0]
                except UnknownItemError:
                    continue
            return out
        return dict(zip(known, vectors, strict=True))

    def _fallback(self, exclude: set[str], now_s: float) -> list[tuple[str, float]]:
        """Recently popular available items; topped up from the catalogue when popularity is thin."""
        items = self.popularity.top(self.k, now_s, exclude=exclude, eligible=self.index.is_available)
        if len(items) < self.k:
            taken = exclude | {i for i, _ in items}
            (extra,) = self.index.search(self._filler[None, :], self.k, exclude=[taken])
            items += [(i, 0.0) for i in extra.ids[: self.k - len(items)]]
        return [(i, round(float(s), 5)) for i, s in items]


def _unit(v: npt.NDArray[Any]) -> Vector:
    out: Vector = np.asarray(v, dtype=np.float32)
    return out / np.float32(np.linalg.norm(out))


def _queue_ms(ev: EventT[Any], batch_start_mono: float) -> float:
    time_in = getattr(ev.message, "time_in", None)
    return 0.0 if time_in is None else max(0.0, (batch_start_mono - time_in) * 1000)


def _rounded(stages: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stages.items()}
