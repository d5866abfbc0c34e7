"""The co-visitation owner on its own: the learning side of the collaborative signal, outside the serving loop.

:class:`~streamrec.streams.covisit_sync.CovisitOwner` merges the row deltas of the items it owns and publishes
the changed rows (see that module for the guarantees). A worker used to run it on its serving event loop,
where its bursts of merging and encoding took ~12 % of the process's GIL time at 1,500 events/s. Like the
learners of production stream systems, it now runs as its own process (``streamrec covisit-owner``): started and
supervised by the worker (``STREAMREC_COVISIT_OWNER=process``, :mod:`streamrec.streams.covisit_supervisor`) or
deployed on its own (``external``). :class:`StandaloneOwner` is that process: its own replica of the rows topic
(to seed working rows from the published ones), its own idempotent ``acks=all`` producer for the rows, the
worker's settings. The guarantees are the owner's: delta offsets are committed only after the rows they changed
were acknowledged, a crash loses nothing (the next owner re-merges the uncommitted deltas on top of the
published rows), a rebalance publishes and commits before the partitions move.

Supervised (``--supervised``), it writes its cumulative counters as one JSON line (:class:`OwnerStats`) on
stdout about every second, and stops when its stdin reaches end-of-file: the worker that started it died,
even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiokafka import AIOKafkaProducer

from streamrec.streams.covisit import CovisitConfig, CovisitGraph
from streamrec.streams.covisit_serve import ScoreServer
from streamrec.streams.covisit_sync import CovisitOwner, CovisitReplica
from streamrec.streams.settings import WorkerSettings

__all__ = [
    "OwnerStats",
    "ProducerSender",
    "StandaloneOwner",
    "covisit_config",
    "covisit_topics",
    "parse_stats_line",
]

log = logging.getLogger(__name__)

MAX_STATS_LINE = 4096  # a stats line is ~100 bytes; anything longer is not one


def covisit_topics(settings: WorkerSettings) -> tuple[str, str]:
    """The internal topics of the collaborative signal: (deltas, compacted rows)."""
    return f"{settings.app_id}-covisit-deltas", f"{settings.app_id}-covisit-rows"


def covisit_config(s: WorkerSettings) -> CovisitConfig:
    return CovisitConfig(
        window=s.covisit_window,
        neighbours=s.covisit_neighbours,
        half_life_s=s.covisit_half_life_s,
        sources=s.covisit_sources,
        damping=s.covisit_damping,
        source_norm=s.covisit_source_norm,
        backward_weight=s.covisit_backward_weight,
        type_weighted=s.covisit_type_weighted,
        keep=s.covisit_keep,
        per_source=s.covisit_per_source,
        position_half_life=s.covisit_position_half_life,
        transition_weight=s.covisit_transition_weight,
    )


@dataclass(frozen=True)
class OwnerStats:
    """An owner process's counters since it started (cumulative, so a lost line loses nothing)."""

    merged: int = 0  # row deltas merged
    published: int = 0  # rows published (acknowledged)
    invalid_deltas: int = 0  # unreadable deltas messages skipped
    invalid_rows: int = 0  # unreadable rows skipped by its replica

    def to_line(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode() + b"\n"

    def since(self, earlier: OwnerStats) -> OwnerStats:
        """What was counted since ``earlier`` (never negative)."""
        return OwnerStats(**{f.name: max(0, getattr(self, f.name) - getattr(earlier, f.name)) for f in fields(self)})


def parse_stats_line(line: bytes) -> OwnerStats:
    """One stats line -> :class:`OwnerStats`; raises ValueError saying why it is not one (other keys are allowed,
    every counter must be there as a non-negative integer)."""
    if len(line) > MAX_STATS_LINE:
        raise ValueError(f"line of {len(line)} bytes, longer than any stats line")
    try:
        doc = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    values: dict[str, int] = {}
    for f in fields(OwnerStats):
        v = doc.get(f.name)
        if type(v) is not int or v < 0:  # bool is an int subclass: excluded by the exact type check
            raise ValueError(f"{f.name!r} is {v!r}, not a non-negative integer")
        values[f.name] = v
    return OwnerStats(**values)


class ProducerSender:
    """:class:`~streamrec.streams.covisit_sync.Sender` over a plain aiokafka producer, for one topic."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self.producer.send(
            self.topic, value, key=key, partition=partition, headers=list(headers) if headers else None
        )
        return fut


class StandaloneOwner:
    """The owner with its own replica and producer (module docstring), and with ``serve_socket`` the scoring of
    its worker's co-visitation candidates (:mod:`streamrec.streams.covisit_serve`). ``run`` until ``stop`` is set."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        stats_out: Callable[[OwnerStats], None] | None = None,
        stats_interval_s: float = 1.0,
        serve_socket: str | None = None,
    ) -> None:
        self.settings = s = settings
        self.security = s.kafka_security()
        self.deltas_topic, self.rows_topic = covisit_topics(s)
        self.stats_out = stats_out
        self.stats_interval_s = stats_interval_s
        self.merged = 0
        self.published = 0
        kwargs = self.security.aiokafka_kwargs()
        self.graph = CovisitGraph(covisit_config(s))
        # scoring for the worker that started it, from this replica's graph (streamrec.streams.covisit_serve)
        self.server = ScoreServer(self.graph, serve_socket) if serve_socket else None
        # In its own process nothing competes for the GIL: the small steps run on this loop (pool=None).
        self.replica = CovisitReplica(
            bootstrap=s.bootstrap, topic=self.rows_topic, graph=self.graph, pool=None, client_kwargs=kwargs
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **kwargs
        )
        self.owner = CovisitOwner(
            bootstrap=s.bootstrap,
            group_id=f"{s.app_id}-covisit",
            deltas_topic=self.deltas_topic,
            rows_out=ProducerSender(self.producer, self.rows_topic),
            graph=self.graph,
            replica=self.replica,
            pool=None,
            flush_interval_s=s.covisit_flush_interval_s,
            on_merged=self._count_merged,
            on_published=self._count_published,
            client_kwargs=kwargs,
        )

    def _count_merged(self, n: int) -> None:
        self.merged += n

    def _count_published(self, n: int) -> None:
        self.published += n

    def stats(self) -> OwnerStats:
        return OwnerStats(
            self.merged, self.published, self.owner.invalid, self.replica.invalid + self.replica.graph.invalid_rows
        )

    def _report(self) -> None:
        if self.stats_out is not None:
            self.stats_out(self.stats())

    async def run(self, stop: asyncio.Event) -> int:
        """Start, merge and publish until ``stop`` is set or a part fails, then stop gracefully: publish what
        was merged, commit, leave the group. Returns the exit status (0, or 1 after a failure)."""
        status = 0
        started: list[Any] = []
        try:
            await self.producer.start()
            started.append(self.producer)
            await self.replica.start()
            started.append(self.replica)
            waiter = asyncio.ensure_future(self.replica.wait_ready())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (waiter, stopper):
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fut
            if not stop.is_set():
                if self.server is not None:  # serves only a caught-up replica: the worker scores locally till then
                    try:
                        await self.server.start()
                        started.append(self.server)
                    except OSError as exc:  # learning goes on; the worker scores on its own replica
                        log.error(
                            "covisit scoring: cannot listen on %s (%r): the worker scores locally",
                            self.server.path,
                            exc,
                        )
                await self.owner.start()
                started.append(self.owner)
                log.info(
                    "covisit owner: group %s-covisit, merging %s into %s (%d rows replicated)",
                    self.settings.app_id,
                    self.deltas_topic,
                    self.rows_topic,
                    len(self.graph),
                )
            while not stop.is_set():
                self._report()
                error = self.owner.error or self.replica.error
                if error is not None:
                    log.error("covisit owner stopping after a failure: %r", error)
                    status = 1
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.stats_interval_s)
        finally:
            log.info("covisit owner stopping: publishing merged rows, committing, leaving the group")
            for part in reversed(started):  # owner (flush + commit + leave), replica, producer
                try:
                    await part.stop()
                except Exception:
                    log.exception("covisit owner: stopping %s failed", type(part).__name__)
                    status = 1
            self._report()
        return status


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
