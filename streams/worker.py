"""The stream worker: composes the Faust app, the catalogue replica, the encoder, the index, the
micro-batcher and the metrics, and owns their lifecycle.

``StreamWorker`` is a ``mode.Service`` run next to the Faust app by ``faust.Worker`` (see
``streamrec worker``): it starts the thread pool, the catalogue replica (which loads the index
snapshot or rebuilds), the batcher and the ``/metrics`` server; the events agent waits until the
replica is ready, then feeds the batcher. On shutdown (SIGTERM/SIGINT) the batcher is drained --
events already taken are processed, published and acked -- before Faust commits and stops, and the
index is snapshotted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import faust
import mode
from prometheus_client import CollectorRegistry, start_http_server

import streamrec
from streamrec.encoders import CachedEncoder, EmbeddingCache, OnnxEncoderConfig, OnnxTextEncoder
from streamrec.errors import ConfigError
from streamrec.index import HnswIndex, SnapshotError
from streamrec.streams.batcher import BatcherStopped, EventBatcher
from streamrec.streams.catalog import CatalogReplica
from streamrec.streams.core import CoreConfig, RecommenderCore
from streamrec.streams.covisit import CovisitConfig, CovisitGraph
from streamrec.streams.covisit_sync import CovisitOwner, CovisitPublisher, CovisitReplica
from streamrec.streams.deadletter import dead_letter_record
from streamrec.streams.faust_app import build_faust_app, sessions_table
from streamrec.streams.hotpath import HotPath, Output
from streamrec.streams.metrics import GcPauseTimer, WorkerMetrics
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import EventType
from streamrec.streams.session import SessionConfig, make_strategy
from streamrec.streams.settings import WorkerSettings
from streamrec.streams.titles import ItemTitles

log = logging.getLogger(__name__)


def default_worker_name(settings: WorkerSettings) -> str:
    return settings.worker_name or socket.gethostname()


class DataDirLock:
    """An exclusive lock on a worker's state directory: two workers must never share RocksDB files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ".lock"
        self._file: IO[str] | None = open(self.path, "a+")  # noqa: SIM115 - held for the worker's life
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise ConfigError(
                f"another worker uses {directory}: give each worker on a host its own "
                "STREAMREC_WORKER_NAME (or STREAMREC_DATA_DIR)"
            ) from None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def load_encoder(settings: WorkerSettings, model_dir: Path) -> OnnxTextEncoder:
    if not (model_dir / "manifest.json").exists():
        raise ConfigError(
            f"no exported model in {model_dir}: run `streamrec export` first (or set STREAMREC_MODEL_DIR)"
        )
    provider = settings.provider
    if provider not in ("auto", "tensorrt", "cuda", "cpu"):
        raise ConfigError(f"unknown provider {provider!r}: auto | tensorrt | cuda | cpu")
    return OnnxTextEncoder(
        model_dir,
        OnnxEncoderConfig(provider=provider, intra_op_threads=settings.encoder_threads,  # type: ignore[arg-type]
                          engine_cache_dir=settings.data_dir / "trt-engines"),
    )


def covisit_topics(settings: WorkerSettings) -> tuple[str, str]:
    """The internal topics of the collaborative signal: (deltas, compacted rows)."""
    return f"{settings.app_id}-covisit-deltas", f"{settings.app_id}-covisit-rows"


def session_config(s: WorkerSettings) -> SessionConfig:
    names = [t.strip() for t in s.consumed_types.split(",") if t.strip()]
    unknown = sorted(set(names) - {t.value for t in EventType})
    if unknown:
        raise ConfigError(f"unknown event types in consumed_types: {unknown}; use {[t.value for t in EventType]}")
    return SessionConfig(half_life_s=s.half_life_s, blend_alpha=s.blend_alpha, exclude_seen=s.exclude_seen,
                         exclude_purchased=s.exclude_purchased, max_consumed=s.max_consumed,
                         consumed_types=frozenset(EventType(n) for n in names))


def covisit_config(s: WorkerSettings) -> CovisitConfig:
    return CovisitConfig(window=s.covisit_window, neighbours=s.covisit_neighbours, half_life_s=s.covisit_half_life_s,
                         sources=s.covisit_sources, damping=s.covisit_damping, source_norm=s.covisit_source_norm)


def model_label(encoder: OnnxTextEncoder) -> str:
    digest = encoder.manifest.files.get(encoder.variant.file, "")
    return f"{encoder.manifest.name}:{encoder.variant.name}@{digest[:12]}"


class StreamWorker(mode.Service):
    """One stream worker process. ``app`` is its Faust app; run both with ``faust.Worker``."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        encoder: OnnxTextEncoder,
        partitions: int,
        covisit_partitions: int | None = None,
        registry: CollectorRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = s = settings
        self.worker_name = default_worker_name(settings)
        self.state_dir = s.data_dir / self.worker_name
        self._lock = DataDirLock(self.state_dir)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.metrics.prime([s.events_topic, s.items_topic])
        self._gc_timer = GcPauseTimer(self.metrics.gc_pause)
        self.raw_encoder = encoder
        self.encoder = CachedEncoder(encoder, cache=EmbeddingCache(s.encoder_cache_size)) \
            if s.encoder_cache_size > 0 else encoder
        self.model_name = model_label(encoder)
        self.metrics.encoder_info.info(
            {"provider": encoder.provider, "variant": encoder.variant.name, "model": self.model_name}
        )
        self.metrics.build_info.info({"version": streamrec.__version__, "model": self.model_name})
        self.index, start_offsets, titles = self._load_index()
        self.titles = ItemTitles(titles)  # written only by the catalogue replica (see streams/titles.py)
        self.pool = ThreadPoolExecutor(max_workers=s.pool_threads, thread_name_prefix="streamrec-pool")
        self.app = build_faust_app(
            app_id=s.app_id, bootstrap=s.bootstrap, data_dir=self.state_dir / "faust", partitions=partitions,
            producer_linger_ms=s.producer_linger_ms,
        )
        self.table = sessions_table(self.app, partitions)
        self.events_topic = self.app.topic(s.events_topic, key_type=bytes, value_type=bytes, partitions=partitions)
        self.recommendations = Output(self.app, s.recommendations_topic)
        self.dead_letter = Output(self.app, s.dead_letter_topic)
        snapshot_wall = _mtime(self.state_dir / "index") if start_offsets else None
        self.replica = CatalogReplica(
            bootstrap=s.bootstrap, topic=s.items_topic, index=self.index, encoder=self.encoder, pool=self.pool,
            snapshot_dir=self.state_dir / "index", snapshot_interval_s=s.snapshot_interval_s,
            start_offsets=start_offsets, titles=self.titles, dead_letter=self._catalog_dead_letter,
            snapshot_extra={"model": self.model_name},
        )
        self.replica.stats.last_snapshot_wall = snapshot_wall
        self.covisit: CovisitGraph | None = None
        self.covisit_replica: CovisitReplica | None = None
        self.covisit_owner: CovisitOwner | None = None
        publisher: CovisitPublisher | None = None
        if s.covisit:
            deltas_topic, rows_topic = covisit_topics(s)
            self.covisit = CovisitGraph(covisit_config(s))
            # the co-visitation bookkeeping runs on the event loop in small steps (pool=None): a third busy
            # thread would make the hot path's pool thread wait for the GIL (measured: streamrec bench)
            self.covisit_replica = CovisitReplica(bootstrap=s.bootstrap, topic=rows_topic, graph=self.covisit,
                                                  pool=None, batch_max=64)
            m = self.metrics
            self.covisit_owner = CovisitOwner(
                bootstrap=s.bootstrap, group_id=f"{s.app_id}-covisit", deltas_topic=deltas_topic,
                rows_out=Output(self.app, rows_topic), graph=self.covisit, replica=self.covisit_replica,
                pool=None, flush_interval_s=s.covisit_flush_interval_s,
                on_merged=m.covisit_deltas.labels("merged").inc, on_published=m.covisit_published.inc,
            )
            publisher = CovisitPublisher(Output(self.app, deltas_topic), covisit_partitions or partitions)
        self.core = RecommenderCore(
            encoder=self.encoder, index=self.index, titles=self.titles,
            strategy=make_strategy(s.strategy, session_config(s)),
            popularity=RecentPopularity(half_life_s=s.popularity_half_life_s), covisit=self.covisit,
            config=CoreConfig(k=s.k, covisit_weight=s.covisit_weight, text_weight=s.text_weight,
                              popularity_weight=s.popularity_weight, text_always=s.text_always),
        )
        self.hotpath = HotPath(
            table=self.table, recommendations=self.recommendations, dead_letter=self.dead_letter, core=self.core,
            metrics=self.metrics, pool=self.pool, model_name=self.model_name, worker_name=self.worker_name,
            covisit_out=publisher,
        )
        self.batcher: EventBatcher[Any] = EventBatcher(
            self.hotpath.process, max_batch=s.batch_max, linger_s=s.batch_linger_ms / 1000,
            queue_max=s.queue_max, name="hot-path",
        )
        self.app.agent(self.events_topic, name=f"{s.app_id}.recommend")(self._agent)
        self.app.on_before_shutdown.connect(self._on_app_shutdown)  # type: ignore[arg-type]
        self._metrics_server: Any = None
        self._cache_seen = (0, 0)
        self._catalog_seen: dict[str, int] = {}

    # ------------------------------------------------------------------ index
    def _load_index(self) -> tuple[HnswIndex, dict[int, int], dict[str, str]]:
        s = self.settings
        snap = self.state_dir / "index"
        try:
            index, extra = HnswIndex.load(snap, dim=self.raw_encoder.dim, ef=s.index_ef,
                                         full_scan_below=s.index_full_scan_below)
            if extra.get("topic") != s.items_topic or extra.get("model") != self.model_name:
                raise SnapshotError("snapshot was made for another items topic or model")
            offsets = {int(p): int(o) for p, o in extra.get("offsets", {}).items()}
            log.info("index snapshot loaded: %d items, resuming %s at %s", len(index), s.items_topic, offsets)
            return index, offsets, {str(k): str(v) for k, v in extra.get("titles", {}).items()}
        except SnapshotError as exc:
            if snap.exists():
                log.warning("index snapshot in %s not usable (%s): rebuilding from the items topic", snap, exc)
        index = HnswIndex(self.raw_encoder.dim, m=s.index_m, ef_construction=s.index_ef_construction, ef=s.index_ef,
                          full_scan_below=s.index_full_scan_below)
        return index, {}, {}

    async def _catalog_dead_letter(self, key: bytes | None, value: bytes | None, exc: Any, partition: int,
                                   offset: int) -> None:
        rec = dead_letter_record(key, value, exc, self.settings.items_topic, partition, offset,
                                 now_ms=int(time.time() * 1000), worker=self.worker_name)
        await (await self.dead_letter.send(rec.key, rec.value, rec.headers))  # delivered before it moves on
        self.metrics.dead_letters.labels(self.settings.items_topic, exc.reason.value).inc()

    # ------------------------------------------------------------------ the agent
    async def _agent(self, stream: faust.StreamT[Any]) -> None:
        await self.replica.wait_ready()
        if self.covisit_replica is not None:
            await self.covisit_replica.wait_ready()
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            try:
                await self.batcher.put(event)
            except BatcherStopped:
                # Shutting down: leave the rest un-acked; it is processed after the restart.
                await asyncio.Event().wait()

    # ------------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        s = self.settings
        self._gc_timer.install()
        if s.metrics_port:
            self._metrics_server, _ = start_http_server(s.metrics_port, addr=s.metrics_host, registry=self.registry)
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, s.metrics_port)
        await self.replica.start()
        if self.covisit_replica is not None and self.covisit_owner is not None:
            await self.covisit_replica.start()
            await self.covisit_owner.start()
        await self.batcher.start()
        self.add_future(self._refresh_gauges())

    async def _on_app_shutdown(self, app: Any, *args: Any, **kwargs: Any) -> None:
        log.info("draining the hot path before Faust commits and stops")
        await self.batcher.stop(drain=True)
        # wait for the outputs in flight, then let their ack callbacks run, so the final commit includes them
        with contextlib.suppress(Exception):
            await self.app.producer.flush()
        await asyncio.sleep(0)

    async def on_stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.batcher.stop(drain=True)
        await self.replica.stop(snapshot=True)
        if self.covisit_owner is not None:
            await self.covisit_owner.stop()  # publishes what it merged, commits, leaves the group
        if self.covisit_replica is not None:
            await self.covisit_replica.stop()
        self.pool.shutdown(wait=True, cancel_futures=False)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self._gc_timer.remove()
        self._lock.release()

    async def _refresh_gauges(self) -> None:
        m = self.metrics
        while not self.should_stop:
            for part, error in (("catalogue replica", self.replica.error),
                                ("covisit replica", self.covisit_replica and self.covisit_replica.error),
                                ("covisit owner", self.covisit_owner and self.covisit_owner.error)):
                if error:
                    log.critical("%s failed: stopping the worker", part)
                    await self.crash(error)
                    return
            if self.covisit is not None:
                m.covisit_rows.set(len(self.covisit))
            st = self.index.stats()
            m.index_items.set(st.items)
            m.index_capacity.set(st.capacity)
            m.index_deleted.set(st.deleted_slots)
            m.index_ready.set(1 if self.replica.ready else 0)
            last = self.replica.stats.last_snapshot_wall
            m.snapshot_age.set(float("nan") if last is None else time.time() - last)
            if isinstance(self.encoder, CachedEncoder):
                cs = self.encoder.stats
                hits0, misses0 = self._cache_seen
                m.encoder_cache.labels("hit").inc(max(0, cs.hits - hits0))
                m.encoder_cache.labels("miss").inc(max(0, cs.misses - misses0))
                self._cache_seen = (cs.hits, cs.misses)
            rs = self.replica.stats
            for op, total in (("upsert", rs.upserts), ("delete", rs.deletes), ("unavailable", rs.unavailable)):
                seen = self._catalog_seen.get(op, 0)
                if total > seen:
                    m.catalog_updates.labels(op).inc(total - seen)
                    self._catalog_seen[op] = total
            for partition, lag in self.replica.lag().items():
                m.lag.labels("catalog", str(partition)).set(lag)
            with contextlib.suppress(Exception):  # the consumer may not be started yet
                assigned = self.app.consumer.assignment()
                m.assigned.set(sum(1 for tp in assigned if tp.topic == self.settings.events_topic))
            monitor = self.app.monitor
            for tp, end in list(getattr(monitor, "tp_end_offsets", {}).items()):
                if tp.topic == self.settings.events_topic:
                    read = getattr(monitor, "tp_read_offsets", {}).get(tp, 0)
                    m.lag.labels("events", str(tp.partition)).set(max(0, end - read - 1))
            await self.sleep(1.0)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
