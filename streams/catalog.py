"""The catalogue replica: every worker keeps the whole item index in step with the ``items`` topic.

It reads ALL partitions of ``items`` with its own consumer (no consumer group: every worker needs
every item), encodes titles (+ category, tags, description) in batches, and upserts / deletes in
the index -- encoder and index calls run in the worker's bounded thread pool, never on the loop.

Snapshots: the replica owns them end to end. Every ``snapshot_interval_s`` (when something changed)
and at shutdown, the index is saved atomically together with what it reflects (:class:`SnapshotInfo`:
the ``items`` topic and offsets, the model label, the item titles). On construction the replica loads
its snapshot -- if it was made for the same topic and model -- and resumes from those offsets; with no
usable snapshot it builds an empty index (through :func:`~streamrec.index.new_index`, the kind the
settings name) and rebuilds from the beginning.

Readiness: the replica records the ``items`` end offsets at start-up and becomes ready once it has
consumed up to them; the worker serves no recommendation before that (``wait_ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.encoders import TextEncoder
from streamrec.index import IndexConfig, SnapshotError, VectorIndex, load_index, new_index
from streamrec.streams.schemas import DeadLetterReason, InvalidMessage, ItemDeletion, ItemRecord, decode_item
from streamrec.streams.titles import ItemTitles
from streamrec.streams.topics import open_topic_replica

log = logging.getLogger(__name__)


def _processing_error(exc: BaseException, where: str) -> InvalidMessage:
    return InvalidMessage(
        DeadLetterReason.PROCESSING_ERROR,
        f"{type(exc).__module__}.{type(exc).__qualname__} in {where}: {str(exc)[:300]}",
    )


def item_text(item: ItemRecord) -> str:
    """The text embedded for an item: title, then category and tags, then a description prefix."""
    parts = [item.title]
    if item.category:
        parts.append(item.category)
    if item.tags:
        parts.append(", ".join(item.tags))
    if item.description:
        parts.append(item.description[:500])
    return " | ".join(p for p in parts if p)


@dataclass
class CatalogStats:
    upserts: int = 0
    deletes: int = 0
    unavailable: int = 0
    invalid: int = 0
    batches: int = 0
    snapshots: int = 0
    last_snapshot_wall: float | None = None  # epoch seconds of the newest snapshot (saved or loaded)
    ready: bool = False
    positions: dict[int, int] = field(default_factory=dict)
    end_offsets_at_start: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What an index snapshot reflects, saved as its ``extra`` dict: written and read only here."""

    topic: str
    model: str
    offsets: dict[int, int]  # partition -> next offset to read
    titles: dict[str, str]  # item id -> title

    def to_extra(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "model": self.model,
            "offsets": {str(p): o for p, o in self.offsets.items()},
            "titles": dict(self.titles),
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> SnapshotInfo:
        try:
            return cls(
                topic=str(extra["topic"]),
                model=str(extra["model"]),
                offsets={int(p): int(o) for p, o in extra["offsets"].items()},
                titles={str(k): str(v) for k, v in extra["titles"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"snapshot without usable replica info ({exc!r})") from None


DeadLetterSink = Callable[[bytes | None, bytes | None, InvalidMessage, int, int], Awaitable[None]]


class CatalogReplica:
    """Consume ``items`` into its index; call ``start()`` ... ``stop()`` (which snapshots).

    Construction restores ``index``, ``titles`` and the start offsets from the snapshot in ``snapshot_dir``
    (made for the same ``topic`` and ``model``), or builds an empty index of ``index_config.kind``.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        index_config: IndexConfig,
        dim: int,
        model: str,
        encoder: TextEncoder,
        pool: Executor,
        snapshot_dir: Path,
        snapshot_interval_s: float = 60.0,
        dead_letter: DeadLetterSink | None = None,
        batch_max: int = 256,
        max_consecutive_errors: int = 100,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})  # security (KafkaSecurity.aiokafka_kwargs)
        self.topic = topic
        self.model = model
        self.encoder = encoder
        self.pool = pool
        self.snapshot_dir = snapshot_dir
        self.snapshot_interval_s = snapshot_interval_s
        self.dead_letter = dead_letter
        self.batch_max = batch_max
        self.stats = CatalogStats()
        self.index: VectorIndex
        self.titles: ItemTitles  # this replica is its only writer (see streams/titles.py)
        self.start_offsets: dict[int, int]
        self.index, self.titles, self.start_offsets = self._restore(index_config, dim)
        self._ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._error: BaseException | None = None
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive_errors = 0

    def _restore(self, config: IndexConfig, dim: int) -> tuple[VectorIndex, ItemTitles, dict[int, int]]:
        try:
            index, extra = load_index(config, self.snapshot_dir, dim)
            info = SnapshotInfo.from_extra(extra)
            if info.topic != self.topic or info.model != self.model:
                raise SnapshotError(f"snapshot was made for topic {info.topic!r} and model {info.model!r}")
        except SnapshotError as exc:
            if self.snapshot_dir.exists():
                log.warning(
                    "index snapshot in %s not usable (%s): rebuilding from the items topic", self.snapshot_dir, exc
                )
            return new_index(config, dim), ItemTitles(), {}
        log.info("index snapshot loaded: %d items, resuming %s at %s", len(index), self.topic, info.offsets)
        self.stats.last_snapshot_wall = _mtime(self.snapshot_dir)
        return index, ItemTitles(info.titles), dict(info.offsets)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def start(self) -> None:
        consumer, ends = await open_topic_replica(
            self.bootstrap, self.topic, start_offsets=self.start_offsets, client_kwargs=self.client_kwargs
        )
        self._consumer = consumer
        self.stats.end_offsets_at_start = ends
        self.stats.positions = {p: self.start_offsets.get(p, 0) for p in ends}
        self._check_ready()
        self._task = asyncio.create_task(self._run(), name="catalog-replica")

    def _check_ready(self) -> None:
        if self._ready.is_set():
            return
        ends = self.stats.end_offsets_at_start
        if all(self.stats.positions.get(p, 0) >= end for p, end in ends.items()):
            self.stats.ready = True
            self._ready.set()
            log.info("catalogue replica ready: %d items in the index", len(self.index))

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the replica (the worker treats it as fatal), or None."""
        return self._error

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("catalogue replica failed")
            self._error = exc
            raise

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        last_snapshot = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=self.batch_max)
            for tp, records in batch.items():
                await self._apply(records)
                if records:
                    self.stats.positions[tp.partition] = records[-1].offset + 1
            if not batch:
                # Transaction markers and compaction leave gaps: trust the consumer's position.
                for tp in consumer.assignment():
                    self.stats.positions[tp.partition] = await consumer.position(tp)
            self._check_ready()
            if self._dirty and time.monotonic() - last_snapshot >= self.snapshot_interval_s:
                await self.snapshot()
                last_snapshot = time.monotonic()

    async def _apply(self, records: Sequence[Any]) -> None:
        # The last record of an item in this batch wins (the topic is compacted the same way).
        latest: dict[str, ItemRecord | ItemDeletion] = {}
        source: dict[str, Any] = {}
        for r in records:
            try:
                item = decode_item(r.key, r.value)
            except InvalidMessage as exc:
                await self._reject(r, exc)
                continue
            except Exception as exc:  # a decoder bug: never stops the replica
                await self._reject(r, _processing_error(exc, "decode"))
                continue
            latest[item.item_id] = item
            source[item.item_id] = r
        if not latest:
            return
        try:
            await self._apply_items(latest)
        except Exception as exc:  # the safety net: isolate the record, dead-letter it, go on
            if len(latest) == 1:
                await self._fail_one(source[next(iter(latest))], exc)
                return
            log.warning(
                "a batch of %d catalogue records failed (%s: %s): re-applying them one by one",
                len(latest),
                type(exc).__name__,
                exc,
            )
            for item_id, item in latest.items():
                try:
                    await self._apply_items({item_id: item})
                except Exception as exc1:
                    await self._fail_one(source[item_id], exc1)
                else:
                    self._consecutive_errors = 0
        else:
            self._consecutive_errors = 0

    async def _reject(self, record: Any, exc: InvalidMessage) -> None:
        self.stats.invalid += 1
        if self.dead_letter is not None:
            await self.dead_letter(record.key, record.value, exc, record.partition, record.offset)

    async def _fail_one(self, record: Any, exc: Exception) -> None:
        self._consecutive_errors += 1
        if self._consecutive_errors > self.max_consecutive_errors:
            raise RuntimeError(
                f"{self._consecutive_errors} catalogue records in a row failed (the last: {exc!r}): "
                "something is broken beyond one bad record"
            ) from exc
        log.error(
            "catalogue record %s[%s]@%s failed: dead-lettered as processing_error",
            self.topic,
            record.partition,
            record.offset,
            exc_info=exc,
        )
        await self._reject(record, _processing_error(exc, "index"))

    async def _apply_items(self, latest: dict[str, ItemRecord | ItemDeletion]) -> None:
        deletes = sorted(i for i, it in latest.items() if isinstance(it, ItemDeletion))
        records_ = [it for it in latest.values() if isinstance(it, ItemRecord)]
        # Unavailable items stay in the index, parked: not recommendable, but their vectors still serve
        # events that name them. Without a title an unavailable record can only park a known item.
        embed = [it for it in records_ if it.title]
        ids = [it.item_id for it in embed]
        texts = [item_text(it) for it in embed]
        available = [it.item_id for it in records_ if it.available]
        unavailable = [it.item_id for it in records_ if not it.available]

        def work() -> None:
            if ids:
                self.index.upsert(ids, self.encoder.encode(texts))
            if available:
                self.index.set_available(available, True)
            if unavailable:
                self.index.set_available(unavailable, False)
            if deletes:
                self.index.delete(deletes)

        await asyncio.get_running_loop().run_in_executor(self.pool, work)
        self.titles.apply(((it.item_id, it.title) for it in embed), deletes)
        self.stats.upserts += len(ids)
        self.stats.unavailable += len(unavailable)
        self.stats.deletes += len(deletes)
        self.stats.batches += 1
        self._dirty = True

    def lag(self) -> dict[int, int]:
        """Records between the replica's position and the end of each ``items`` partition."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[int, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                out[tp.partition] = max(0, high - self.stats.positions.get(tp.partition, 0))
        return out

    async def snapshot(self) -> None:
        """Save the index with the offsets it reflects (atomic; runs in the pool)."""
        offsets = dict(self.stats.positions)
        extra = SnapshotInfo(self.topic, self.model, offsets, self.titles.copy()).to_extra()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, lambda: self.index.save(self.snapshot_dir, extra))
        self._dirty = False
        self.stats.snapshots += 1
        self.stats.last_snapshot_wall = time.time()
        log.info("index snapshot saved: %d items at offsets %s", len(self.index), offsets)

    async def stop(self, snapshot: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if snapshot and self._dirty and self.ready:
            await self.snapshot()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
