"""Sharing the co-visitation graph between the workers of a consumer group, through Kafka.

A worker sees only its partitions' events, so what it learns must reach every worker:

1. **deltas** (``<app_id>-covisit-deltas``, not compacted): the hot path publishes each batch's row
   deltas (:class:`~streamrec.streams.covisit.CovisitDelta`), grouped by the partition that owns the
   row's item (``blake2b64(item) % partitions``), merged per row over ``STREAMREC_COVISIT_DELTA_INTERVAL_MS``
   (:meth:`CovisitPublisher.add`): one message per partition per interval, not per batch. An event is acked
   only when the messages carrying its deltas are acknowledged too (at-least-once, like the
   recommendations).
2. **owner** (:class:`CovisitOwner`, consumer group ``<app_id>-covisit``): the owner process assigned a deltas
   partition owns the rows of its items. It merges their deltas into its *working* rows (versioned by the
   delta message's offset, so a re-delivered message is merged once; a row is first brought up to the
   newest published one) and, every ``flush_interval_s`` of wall time or of the deltas' event time, whichever
   comes first (:meth:`CovisitOwner._flush_due`), publishes each changed row (its ``neighbours`` best, ~0.8 KB)
   to ...
3. **rows** (``<app_id>-covisit-rows``, compacted, key = item id): every worker replicates the whole
   topic into its own graph (:class:`CovisitReplica`; a row replaces the held one only if its version is
   newer). Binary rows are stored as they arrive, only their header read and their structure checked
   (``peek_row``, ~1/7 of a decode); a row is decoded and fully validated when the hot path first reads it,
   so the replica's cost per published row no longer grows with the row's size, and rows replaced before
   anyone read them (most of a large catalogue's) are never decoded. Delta offsets are committed only
   after the rows they changed were acknowledged, so a crash loses nothing: the next owner re-merges the
   uncommitted deltas on top of the last published rows (it first catches its replica up to the end of the
   rows topic).

Every worker, owners included, SERVES only published rows (the working rows are never read by the hot
path), so all workers serve the same rows (up to the flush interval plus replication delay), a served
row changes at most once per flush interval (its cached neighbour scores are rebuilt that often), restarts
rebuild the graph from the compacted topic, and the rows topic is bounded by items x neighbours.
Rows are written at most once per flush interval per item however many events touch them (live: event time
moves with wall time; a replay of old events or a backlog flushes up to every ``min_flush_spacing_s``, 0.25 s, so
its rows lag it by a flush interval of its own time, not by the thousands of events it carries in 5 s of wall
time: on a 22-year log replayed at 500 events/s, 5 s of wall time were half a year of its events).

Both topics carry the compact binary format of :mod:`streamrec.streams.covisit_wire` (JSON messages of
earlier versions are still read). The owner and the replica run on an event loop in small steps: a
deltas message at a time, rows published in chunks of ``_SEND_CHUNK`` and applied in batches of
``batch_max``, each ~1 ms, with a yield between them. The replica runs in every worker; the owner runs, by
default, in a process of its own (``streamrec covisit-owner``, :mod:`streamrec.streams.covisit_owner`, with its
own replica and producer), started and supervised by the worker (:mod:`streamrec.streams.covisit_supervisor`),
or on the worker's serving loop (``STREAMREC_COVISIT_OWNER=inline``), or deployed separately (``external``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streamrec.streams.consumed import item_hash
from streamrec.streams.covisit import (
    CovisitConfig,
    CovisitDelta,
    CovisitGraph,
    CovisitRow,
    CovisitRowError,
)
from streamrec.streams.covisit_wire import decode_deltas, decode_row, encode_deltas, encode_row, peek_row
from streamrec.streams.delivery import all_delivered
from streamrec.streams.topics import open_topic_replica

__all__ = [
    "CovisitOwner",
    "CovisitPublisher",
    "CovisitReplica",
    "EventClock",
    "decode_deltas",
    "encode_deltas",
    "owner_partition",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_ROWS_PER_MESSAGE = 512
_SEND_CHUNK = 32  # rows encoded and appended to the producer at a time (~1 ms on the loop), then a yield
_SPAN_HALF_LIVES = 16.0  # deltas further apart in event time are published apart (numbers stay in range)
VERSION_HEADER = "streamrec.covisit.version"  # lets a replica skip rows it holds already without parsing them


class Sender(Protocol):
    """What :class:`~streamrec.streams.hotpath.Output` offers: append a record, get its delivery future."""

    async def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]: ...


def owner_partition(item: str, partitions: int) -> int:
    """The deltas partition (and so the owner) of an item's row: stable across processes."""
    return item_hash(item) % partitions


class CovisitPublisher:
    """The hot path's side: one message per owning partition per flush.

    ``send`` publishes deltas now. ``add`` (the hot path's) accumulates them for up to ``interval_s``, merged
    per row at one reference time, then publishes them all: a few messages per partition per interval instead
    of one per partition per micro-batch (at 500 events/s, ~2,000 messages/s became ~25, and the owner
    merges each row once per interval rather than once per batch). Learning is delayed by at most
    ``interval_s``, far below the owners' row publication interval; the events wait for the delivery of the
    flush that carries their deltas before they are acked (offsets are committed only after it)."""

    def __init__(
        self,
        output: Sender,
        partitions: int,
        *,
        interval_s: float = 0.0,
        half_life_s: float | None = None,
        max_rows: int = 20_000,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.output = output
        self.on_sent = on_sent  # rows' deltas handed to the producer (after merging: what the owners receive)
        self.partitions = partitions
        self.interval_s = interval_s
        self.half_life_s = half_life_s if half_life_s is not None else CovisitConfig().half_life_s
        self.max_rows = max_rows
        self.messages = 0  # deltas messages sent
        self._acc: dict[str, CovisitDelta] = {}
        self._ref: float | None = None
        self._pending: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def send(self, deltas: Sequence[CovisitDelta]) -> list[asyncio.Future[Any]]:
        by_partition: dict[int, list[CovisitDelta]] = {}
        for d in deltas:
            by_partition.setdefault(owner_partition(d.item, self.partitions), []).append(d)
        futs = []
        for partition, rows in sorted(by_partition.items()):
            for start in range(0, len(rows), _MAX_ROWS_PER_MESSAGE):
                chunk = rows[start : start + _MAX_ROWS_PER_MESSAGE]
                futs.append(await self.output.send(None, encode_deltas(chunk), partition=partition))
        self.messages += len(futs)
        if self.on_sent is not None:
            self.on_sent(len(deltas))
        return futs

    async def add(self, deltas: Sequence[CovisitDelta]) -> asyncio.Future[None]:
        """Accumulate ``deltas`` (they become the publisher's: merged in place) and return a future that is done
        when the messages carrying them are acknowledged (failed if one is not)."""
        hl = self.half_life_s
        if self._ref is not None and any(abs(d.ts_s - self._ref) > _SPAN_HALF_LIVES * hl for d in deltas):
            await self.flush()  # far apart in event time: publish what is held at its own reference time first
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.get_running_loop().create_future()
        acc = self._acc
        for d in deltas:
            if self._ref is None:
                self._ref = d.ts_s
            ref = self._ref
            f = 1.0 if d.ts_s == ref else 0.5 ** ((ref - d.ts_s) / hl)
            held = acc.get(d.item)
            if held is None:
                if f != 1.0:
                    d.n *= f
                    d.pairs = {j: w * f for j, w in d.pairs.items()}
                    d.nexts = {j: w * f for j, w in d.nexts.items()}
                d.ts_s = ref
                acc[d.item] = d
                continue
            held.n += d.n * f
            pairs = held.pairs
            for j, w in d.pairs.items():
                pairs[j] = pairs.get(j, 0.0) + w * f
            if d.nexts:
                nexts = held.nexts
                for j, w in d.nexts.items():
                    nexts[j] = nexts.get(j, 0.0) + w * f
        if self.interval_s <= 0 or len(acc) >= self.max_rows:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._flush_later)
        return pending

    def _flush_later(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the waiting events were failed with it
            log.warning("publishing co-visitation deltas failed: %r", task.exception())

    async def flush(self) -> None:
        """Publish what is held now; the waiting events' future completes when Kafka acknowledged it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        acc, pending = self._acc, self._pending
        self._acc, self._pending, self._ref = {}, None, None
        if pending is None:
            return
        try:
            futs = await self.send(list(acc.values()))
        except BaseException as exc:
            if not pending.done():
                pending.set_exception(exc)
            raise
        _complete_when_all_done(pending, futs)

    async def close(self) -> None:
        """Publish what is held and wait for the flushes in flight (shutdown, after the hot path drained)."""
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)


def _complete_when_all_done(target: asyncio.Future[None], futs: Sequence[asyncio.Future[Any]]) -> None:
    """``target`` done once every future in ``futs`` succeeded; failed with the first failure."""
    if not futs:
        target.set_result(None)
        return
    left = [len(futs)]

    def done(fut: asyncio.Future[Any]) -> None:
        if target.done():
            return
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            target.set_exception(exc)
            return
        left[0] -= 1
        if left[0] == 0:
            target.set_result(None)

    for fut in futs:
        fut.add_done_callback(done)


class CovisitReplica:
    """Every worker: the whole compacted rows topic, applied to ``graph`` (newest version wins)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        graph: CovisitGraph,
        pool: Executor | None,
        batch_max: int = 256,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})  # security (KafkaSecurity.aiokafka_kwargs)
        self.topic = topic
        self.graph = graph
        self.pool = pool
        self.batch_max = batch_max
        self.applied = 0
        self.invalid = 0
        self.positions: dict[int, int] = {}
        self._ends_at_start: dict[int, int] = {}
        self._ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def start(self) -> None:
        consumer, self._ends_at_start = await open_topic_replica(
            self.bootstrap, self.topic, client_kwargs=self.client_kwargs
        )
        self._consumer = consumer
        self.positions = {p: 0 for p in self._ends_at_start}
        self._check_ready()
        self._task = asyncio.create_task(self._run(), name="covisit-replica")

    async def caught_up(self, timeout_s: float = 60.0) -> None:
        """Wait until the replica has applied every row published before this call (owners call it before
        merging deltas on top of the rows)."""
        consumer = self._consumer
        if consumer is None:
            return
        tps = [TopicPartition(self.topic, p) for p in self.positions]
        ends = {tp.partition: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}
        deadline = time.monotonic() + timeout_s
        while any(self.positions.get(p, 0) < end for p, end in ends.items()):
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"covisit replica did not catch up with {self.topic} in {timeout_s}s")
            await asyncio.sleep(0.02)

    def _check_ready(self) -> None:
        if not self._ready.is_set() and all(self.positions.get(p, 0) >= e for p, e in self._ends_at_start.items()):
            self._ready.set()
            log.info("covisit replica ready: %d rows", len(self.graph))

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=self.batch_max)
                for tp, records in batch.items():
                    if records:
                        await _run(loop, self.pool, self._apply, records)
                        self.positions[tp.partition] = records[-1].offset + 1
                if not batch:  # compaction and transaction markers leave gaps: trust the consumer's position
                    for tp in consumer.assignment():
                        self.positions[tp.partition] = await consumer.position(tp)
                self._check_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("covisit replica failed")
            self.error = exc
            raise

    def _apply(self, records: Sequence[Any]) -> None:
        """Binary rows are stored undecoded (``CovisitGraph.put_raw``: their structure checked here, the rest when
        a row is first served); JSON rows of earlier versions are decoded now."""
        rows: list[CovisitRow] = []
        raw: list[tuple[str, float, float, int, bytes]] = []
        for r in records:
            if r.value is None:
                if r.key is not None:
                    self._put(rows, raw)  # keep the order: rows before the tombstone
                    rows, raw = [], []
                    self.graph.remove(r.key.decode("utf-8", "replace"))
                continue
            if r.key is not None and not self._newer(r.key, r.headers):
                continue  # our own write coming back, or an old one: skip decoding it
            try:
                if r.value[:1] == b"{":
                    rows.append(decode_row(r.value))
                else:
                    raw.append((*peek_row(r.value), r.value))
            except CovisitRowError as exc:
                self.invalid += 1
                log.warning("skipped an unreadable covisit row at %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
                continue
        self._put(rows, raw)

    def _put(self, rows: list[CovisitRow], raw: list[tuple[str, float, float, int, bytes]]) -> None:
        if rows:
            self.applied += self.graph.put_rows(rows)
        if raw:
            self.applied += self.graph.put_raw(raw)

    def _newer(self, key: bytes, headers: Sequence[tuple[str, bytes]] | None) -> bool:
        """False when the record's version header says the graph already holds this row or a newer one."""
        for name, value in headers or ():
            if name == VERSION_HEADER:
                try:
                    return self.graph.version(key.decode("utf-8")) < int(value)
                except (UnicodeDecodeError, ValueError):
                    return True
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class EventClock:
    """The event time of the deltas an owner merged: how far its newest moved since the last :meth:`mark` (a flush).
    Only forward progress counts: a late event (an offline phone's) never moves it; one from a clock far ahead moves
    it once, after which nothing does until the stream catches up."""

    __slots__ = ("_mark", "newest")

    def __init__(self) -> None:
        self.newest = -math.inf
        self._mark = -math.inf

    def saw(self, deltas: Sequence[CovisitDelta]) -> None:
        """Merged ``deltas`` (each carries its batch's reference time, ``ts_s``)."""
        if not deltas:
            return
        if self._mark == -math.inf:  # the first deltas ever: measure from their oldest
            self._mark = min(d.ts_s for d in deltas)
        self.newest = max(self.newest, max(d.ts_s for d in deltas))

    def moved(self) -> float:
        """Event time the newest merged delta is past the mark, s (0 before any)."""
        return 0.0 if self.newest == -math.inf else self.newest - self._mark

    def mark(self) -> None:
        self._mark = max(self._mark, self.newest)


class CovisitOwner:
    """Merges the deltas of the rows this worker owns and publishes the changed rows (module docstring)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        deltas_topic: str,
        rows_out: Sender,
        graph: CovisitGraph,
        replica: CovisitReplica,
        pool: Executor | None,
        flush_interval_s: float = 1.0,
        min_flush_spacing_s: float = 0.25,
        max_dirty: int = 10_000,
        on_merged: Callable[[int], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})  # security (KafkaSecurity.aiokafka_kwargs)
        self.group_id = group_id
        self.deltas_topic = deltas_topic
        self.rows_out = rows_out
        self.graph = graph  # the serving graph (fed by the replica); read here only to seed working rows
        self.working = CovisitGraph(graph.config)  # the rows this worker merges; the hot path never reads it
        self.replica = replica
        self.pool = pool
        self.flush_interval_s = flush_interval_s
        self.min_flush_spacing_s = min(min_flush_spacing_s, flush_interval_s)
        self.max_dirty = max_dirty
        self.on_merged = on_merged
        self.on_published = on_published
        self.invalid = 0
        self._dirty: set[str] = set()
        self._pending: dict[TopicPartition, int] = {}  # next offset to commit, once the dirty rows are out
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.error: BaseException | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **self.client_kwargs,
        )
        await consumer.start()
        consumer.subscribe([self.deltas_topic], listener=_Rebalance(self))
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="covisit-owner")

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        last_flush = time.monotonic()
        clock = EventClock()  # how far the merged deltas' event time moved since the last flush
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=256)
                for tp, records in batch.items():
                    for r in records:
                        try:
                            deltas = decode_deltas(r.value)
                        except ValueError as exc:
                            self.invalid += 1
                            log.warning(
                                "skipped a corrupt covisit deltas message %s[%d]@%d: %s",
                                r.topic,
                                r.partition,
                                r.offset,
                                exc,
                            )
                            continue
                        # version = offset + 1: a new row starts at version 0
                        changed = await _run(loop, self.pool, self._merge, deltas, r.offset + 1)
                        self._dirty.update(changed)
                        clock.saw(deltas)
                        if self.on_merged is not None:
                            self.on_merged(len(deltas))
                    if records:
                        self._pending[tp] = records[-1].offset + 1
                now = time.monotonic()
                if self._pending and self._flush_due(now - last_flush, clock.moved()):
                    await self.flush()
                    last_flush = now
                    clock.mark()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("covisit owner failed")
            self.error = exc
            raise

    def _flush_due(self, wall_s: float, event_s: float) -> bool:
        """Whether to publish now, ``wall_s`` after the last flush, the newest merged event time having moved
        ``event_s`` past where it stood then: once the flush interval has passed in wall time OR in event time (a
        replay of old events, a backlog caught up: the rows then lag the stream by as much of its own time as they
        would live, not by the thousands of events a compressed stream carries in a few seconds), but not more
        often than every ``min_flush_spacing_s``; or when ``max_dirty`` rows wait. Late events do not move the
        newest event time; one from a clock far ahead moves it once (one early flush), after which wall time
        rules until the stream catches up."""
        if wall_s >= self.flush_interval_s or len(self._dirty) >= self.max_dirty:
            return True
        return event_s >= self.flush_interval_s and wall_s >= self.min_flush_spacing_s

    async def flush(self) -> None:
        """Publish the changed rows, wait for their acknowledgement, then commit the merged deltas' offsets."""
        async with self._flush_lock:
            consumer = self._consumer
            dirty, self._dirty = sorted(self._dirty), set()
            pending, self._pending = dict(self._pending), {}
            if dirty:
                loop = asyncio.get_running_loop()
                futs = []
                for start in range(0, len(dirty), _SEND_CHUNK):  # small chunks: the hot path runs in between
                    chunk = dirty[start : start + _SEND_CHUNK]
                    records = await _run(loop, self.pool, self._encode_rows, chunk)
                    for key, value, version in records:
                        futs.append(await self.rows_out.send(key, value, [(VERSION_HEADER, version)]))
                await all_delivered(futs)  # not gather: it would hold this loop, which also answers scoring
                if self.on_published is not None:
                    self.on_published(len(futs))
            if pending and consumer is not None:
                assigned = consumer.assignment()
                offsets = {tp: o for tp, o in pending.items() if tp in assigned}
                if offsets:
                    await consumer.commit(offsets)

    def _merge(self, deltas: Sequence[CovisitDelta], version: int) -> list[str]:
        """Merge into the working rows, each first brought up to the newest published row (after a restart or
        a rebalance the published row is newer than anything held here)."""
        for d in deltas:
            if self.working.version(d.item) < self.graph.version(d.item):
                row = self.graph.row(d.item)
                if row is not None:
                    self.working.put_row(row)
        return self.working.apply(deltas, version)

    def _encode_rows(self, items: Sequence[str]) -> list[tuple[bytes, bytes, bytes]]:
        out = []
        for item in items:
            row = self.working.row(item)
            if row is not None:
                out.append((item.encode("utf-8"), encode_row(row), str(row.version).encode()))
        return out

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.flush()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CovisitOwner) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # hand over cleanly: what we merged is published and committed before another worker owns it
        await self.owner.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # merge only on top of every row published so far (by the previous owner too)
        await self.owner.replica.caught_up()


async def _run(loop: asyncio.AbstractEventLoop, pool: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in ``pool``, or on the loop itself when ``pool`` is None (then in small steps: the callers
    hand over small batches, and the loop gets a turn after each)."""
    if pool is None:
        out = fn(*args)
        await asyncio.sleep(0)
        return out
    return await loop.run_in_executor(pool, fn, *args)
