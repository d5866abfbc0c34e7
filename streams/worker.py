"""The stream worker: composes the Faust app, the catalogue replica, the encoder, the index, the
micro-batcher and the metrics, and owns their lifecycle.

``StreamWorker`` is a ``mode.Service`` run next to the Faust app by ``faust.Worker`` (see
``streamrec worker``): it starts the thread pool, the catalogue replica (which loads the index
snapshot or rebuilds), the batcher and the ``/metrics`` server; the events agent waits until the
replica is ready, then feeds the batcher. On shutdown (SIGTERM/SIGINT) the batcher is drained --
events already taken are processed, published and acked -- before Faust commits and stops, and the
index is snapshotted. The co-visitation owner (the signal's learner) runs in a child process the worker
supervises (``STREAMREC_COVISIT_OWNER=process``, :mod:`streamrec.streams.covisit_supervisor`; stopped after the
hot path drained), on the serving loop (``inline``) or elsewhere (``external``). If the events agent, the hot
path, the catalogue replica or the owner (its process restarted too often) fails, the worker says so
(``/healthz``, ``/readyz``, ``streamrec_worker_healthy``) and stops with exit status 1 instead of staying up
as a zombie; the entry point's watchdog bounds every stop by ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import faust
import mode
from prometheus_client import CollectorRegistry

import streamrec
from streamrec.encoders import CachedEncoder, EmbeddingCache, OnnxEncoderConfig, OnnxTextEncoder, TextEncoder
from streamrec.errors import ConfigError
from streamrec.index import IndexConfig, VectorIndex
from streamrec.streams.batcher import BatcherStopped, EventBatcher
from streamrec.streams.catalog import CatalogReplica
from streamrec.streams.core import CoreConfig, RecommenderCore
from streamrec.streams.covisit import CovisitGraph
from streamrec.streams.covisit_owner import covisit_config as covisit_config  # re-exported (evaluation)
from streamrec.streams.covisit_owner import covisit_topics as covisit_topics
from streamrec.streams.covisit_serve import MAX_SOCKET_PATH, SOCKET_NAME, LocalScorer, RemoteScorer, new_serve_dir
from streamrec.streams.covisit_supervisor import OwnerProcess
from streamrec.streams.covisit_sync import CovisitOwner, CovisitPublisher, CovisitReplica
from streamrec.streams.deadletter import dead_letter_record
from streamrec.streams.faust_app import FetchPolicy, build_faust_app, sessions_table, set_events_fetch
from streamrec.streams.hotpath import HotPath, Output
from streamrec.streams.metrics import GcPauseTimer, WorkerMetrics
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.redelivery import RedeliveryGuard
from streamrec.streams.schemas import EventType
from streamrec.streams.session import SessionConfig, make_strategy
from streamrec.streams.settings import WorkerSettings
from streamrec.streams.signals import CovisitScorer
from streamrec.streams.state_cache import StateCache
from streamrec.streams.supervision import HealthServer, ShutdownWatchdog

log = logging.getLogger(__name__)

COMPONENTS = ("events_agent", "hot_path", "catalogue_replica", "covisit_replica", "covisit_owner")


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
    return OnnxTextEncoder(
        model_dir,
        OnnxEncoderConfig(
            provider=settings.provider,
            intra_op_threads=settings.encoder_threads,
            engine_cache_dir=settings.data_dir / "trt-engines",
            self_check=settings.encoder_self_check,
        ),
    )


def index_config(settings: WorkerSettings) -> IndexConfig:
    """The item index the settings ask for (built or loaded by the catalogue replica)."""
    return IndexConfig(
        kind=settings.index_kind,
        m=settings.index_m,
        ef_construction=settings.index_ef_construction,
        ef=settings.index_ef,
        full_scan_below=settings.index_full_scan_below,
    )


def session_config(s: WorkerSettings) -> SessionConfig:
    names = [t.strip() for t in s.consumed_types.split(",") if t.strip()]
    unknown = sorted(set(names) - {t.value for t in EventType})
    if unknown:
        raise ConfigError(f"unknown event types in consumed_types: {unknown}; use {[t.value for t in EventType]}")
    return SessionConfig(
        half_life_s=s.half_life_s,
        blend_alpha=s.blend_alpha,
        exclude_seen=s.exclude_seen,
        exclude_purchased=s.exclude_purchased,
        max_consumed=s.max_consumed,
        consumed_types=frozenset(EventType(n) for n in names),
    )


def core_from_settings(
    s: WorkerSettings,
    *,
    encoder: TextEncoder,
    index: VectorIndex,
    titles: Mapping[str, str],
    covisit: CovisitGraph | None,
    strategy: str | None = None,
    k: int | None = None,
    covisit_scorer: CovisitScorer | None = None,
) -> RecommenderCore:
    """The recommender core a worker with settings ``s`` serves -- the worker's and ``streamrec evaluate``'s one
    construction (``strategy``/``k``: the evaluation's overrides; ``covisit``: the graph, or None when off)."""
    return RecommenderCore(
        encoder=encoder,
        index=index,
        titles=titles,
        strategy=make_strategy(strategy or s.strategy, session_config(s)),
        popularity=RecentPopularity(half_life_s=s.popularity_half_life_s),
        covisit=covisit,
        covisit_scorer=covisit_scorer,
        config=CoreConfig(
            k=k or s.k,
            covisit_weight=s.covisit_weight,
            text_weight=s.text_weight,
            popularity_weight=s.popularity_weight,
            text_always=s.text_always,
        ),
    )


def model_label(encoder: OnnxTextEncoder) -> str:
    digest = encoder.manifest.files.get(encoder.variant.file, "")
    return f"{encoder.manifest.name}:{encoder.variant.name}@{digest[:12]}"


def publish_encoder_info(metrics: WorkerMetrics, encoder: OnnxTextEncoder) -> None:
    """``streamrec_encoder_info``: the variant really served and why; the self-check cosines per variant."""
    sel = encoder.selection
    metrics.encoder_info.info(
        {
            "provider": encoder.provider,
            "variant": encoder.variant.name,
            "model": model_label(encoder),
            "self_check": sel.check_state,
            "fallback_from": sel.first if sel.fell_back else "",
            "fallback_reason": sel.reason()[:300],
        }
    )
    for check in sel.checked:
        metrics.encoder_self_check.labels(check.variant, "mean").set(check.cos_mean)
        metrics.encoder_self_check.labels(check.variant, "min").set(check.cos_min)


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
        watchdog: ShutdownWatchdog | None = None,
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
        self.encoder = (
            CachedEncoder(encoder, cache=EmbeddingCache(s.encoder_cache_size)) if s.encoder_cache_size > 0 else encoder
        )
        self.model_name = model_label(encoder)
        publish_encoder_info(self.metrics, encoder)
        self.metrics.build_info.info({"version": streamrec.__version__, "model": self.model_name})
        self.pool = ThreadPoolExecutor(max_workers=s.pool_threads, thread_name_prefix="streamrec-pool")
        security = s.kafka_security()
        self.replica = CatalogReplica(
            bootstrap=s.bootstrap,
            topic=s.items_topic,
            index_config=index_config(s),
            dim=encoder.dim,
            model=self.model_name,
            encoder=self.encoder,
            pool=self.pool,
            snapshot_dir=self.state_dir / "index",
            snapshot_interval_s=s.snapshot_interval_s,
            dead_letter=self._catalog_dead_letter,
            client_kwargs=security.aiokafka_kwargs(),
        )
        self.index = self.replica.index
        self.titles = self.replica.titles
        self.app = build_faust_app(
            app_id=s.app_id,
            bootstrap=s.bootstrap,
            data_dir=self.state_dir / "faust",
            partitions=partitions,
            producer_linger_ms=s.producer_linger_ms,
            group_instance_id=f"{s.app_id}:{self.worker_name}" if s.static_membership else None,
            session_timeout_s=s.session_timeout_s,
            credentials=security.faust_credentials(),
        )
        # the events consumer starts with Faust's eager fetches; the periodic loop holds them while the stream is busy
        self.fetch_policy = FetchPolicy(s.consumer_fetch_max_wait_ms, s.consumer_fetch_min_bytes)
        self._fetch_seen = (0, time.monotonic())
        # Ready only once the consumer group has assigned this worker its partitions and Faust has recovered
        # their table state: before that it serves nothing, and a SIGTERM in the middle of the group join can
        # keep Faust's consumer from stopping until the watchdog ends it.
        self._assigned = False
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete, weak=False)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_partitions_assigned, weak=False)  # type: ignore[arg-type]
        self.redelivery = RedeliveryGuard()
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked, weak=False)  # type: ignore[arg-type]
        self.table = sessions_table(self.app, partitions)
        self.events_topic = self.app.topic(s.events_topic, key_type=bytes, value_type=bytes, partitions=partitions)
        self.recommendations = Output(self.app, s.recommendations_topic)
        self.dead_letter = Output(self.app, s.dead_letter_topic)
        self.covisit: CovisitGraph | None = None
        self.covisit_replica: CovisitReplica | None = None
        self.covisit_owner: CovisitOwner | None = None  # inline
        self.owner_process: OwnerProcess | None = None  # process (the default)
        self.covisit_scorer: RemoteScorer | LocalScorer | None = None  # who scores the candidates (counted)
        self._serve_dir: str | None = None
        publisher: CovisitPublisher | None = None
        if s.covisit:
            deltas_topic, rows_topic = covisit_topics(s)
            self.covisit = CovisitGraph(covisit_config(s))
            self.covisit.on_invalid = self.metrics.covisit_invalid.labels("rows").inc
            # the co-visitation bookkeeping runs on the event loop in small steps (pool=None): a third busy
            # thread would make the hot path's pool thread wait for the GIL (measured: streamrec bench)
            self.covisit_replica = CovisitReplica(
                bootstrap=s.bootstrap,
                topic=rows_topic,
                graph=self.covisit,
                pool=None,
                batch_max=64,
                client_kwargs=security.aiokafka_kwargs(),
            )
            m = self.metrics
            if s.covisit_owner == "process":
                serve_socket = None
                if s.covisit_serving == "owner":  # a directory only this user can enter holds the socket
                    self._serve_dir = new_serve_dir()
                    serve_socket = os.path.join(self._serve_dir, SOCKET_NAME)
                    if len(os.fsencode(serve_socket)) > MAX_SOCKET_PATH:
                        log.warning("covisit scoring: %s is too long for a Unix socket: scoring locally", serve_socket)
                        shutil.rmtree(self._serve_dir, ignore_errors=True)
                        self._serve_dir = serve_socket = None
                if serve_socket is not None:
                    self.covisit_scorer = RemoteScorer(
                        serve_socket,
                        self.covisit,
                        timeout_s=s.covisit_serving_timeout_ms / 1000,
                        on_scored=lambda by, n: m.covisit_scored.labels(by).inc(n),
                    )
                self.owner_process = OwnerProcess.for_worker(s, m, serve_socket=serve_socket)
            elif s.covisit_owner == "inline":
                self.covisit_owner = CovisitOwner(
                    bootstrap=s.bootstrap,
                    group_id=f"{s.app_id}-covisit",
                    deltas_topic=deltas_topic,
                    rows_out=Output(self.app, rows_topic),
                    graph=self.covisit,
                    replica=self.covisit_replica,
                    pool=None,
                    flush_interval_s=s.covisit_flush_interval_s,
                    on_merged=m.covisit_deltas.labels("merged").inc,
                    on_published=m.covisit_published.inc,
                    client_kwargs=security.aiokafka_kwargs(),
                )
            if self.covisit_scorer is None:
                self.covisit_scorer = LocalScorer(
                    self.covisit, on_scored=lambda by, n: m.covisit_scored.labels(by).inc(n)
                )
            publisher = CovisitPublisher(
                Output(self.app, deltas_topic),
                covisit_partitions or partitions,
                interval_s=s.covisit_delta_interval_ms / 1000,
                half_life_s=s.covisit_half_life_s,
                on_sent=m.covisit_deltas.labels("sent").inc,
            )
        self.core = core_from_settings(
            s,
            encoder=self.encoder,
            index=self.index,
            titles=self.titles,
            covisit=self.covisit,
            covisit_scorer=self.covisit_scorer,
        )
        self.hotpath = HotPath(
            table=self.table,
            recommendations=self.recommendations,
            dead_letter=self.dead_letter,
            core=self.core,
            metrics=self.metrics,
            pool=self.pool,
            model_name=self.model_name,
            worker_name=self.worker_name,
            covisit_out=publisher,
            state_cache=StateCache(s.state_cache_users),
        )
        self.batcher: EventBatcher[Any] = EventBatcher(
            self.hotpath.process,
            max_batch=s.batch_max,
            linger_s=s.batch_linger_ms / 1000,
            queue_max=s.queue_max,
            name="hot-path",
        )
        self.app.agent(self.events_topic, name=f"{s.app_id}.recommend")(self._agent)
        self.app.on_before_shutdown.connect(self._on_app_shutdown)  # type: ignore[arg-type]
        self._metrics_server: HealthServer | None = None
        # The entry point passes one (it owns the process); an embedding program decides for itself.
        self.watchdog = watchdog
        self.failed: str | None = None  # the component that failed, if one did
        for component in COMPONENTS:
            self.metrics.component_up.labels(component).set(1)
        self.metrics.healthy.set(1)
        self._cache_seen = (0, 0)
        self._state_cache_seen = (0, 0)
        self._catalog_seen: dict[str, int] = {}

    # ------------------------------------------------------------------ catalogue dead letters
    async def _catalog_dead_letter(
        self, key: bytes | None, value: bytes | None, exc: Any, partition: int, offset: int
    ) -> None:
        rec = dead_letter_record(
            key,
            value,
            exc,
            self.settings.items_topic,
            partition,
            offset,
            now_ms=int(time.time() * 1000),
            worker=self.worker_name,
        )
        await (await self.dead_letter.send(rec.key, rec.value, rec.headers))  # delivered before it moves on
        self.metrics.dead_letters.labels(self.settings.items_topic, exc.reason.value).inc()

    # ------------------------------------------------------------------ the agent
    async def _agent(self, stream: faust.StreamT[Any]) -> None:
        try:
            await self.replica.wait_ready()
            if self.covisit_replica is not None:
                await self.covisit_replica.wait_ready()
            if self.settings.gc_freeze:
                freeze_startup_objects()
            guard = self.redelivery
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                message = event.message
                if not guard.admit(message):
                    self._redelivered(message)
                    continue
                try:
                    await self.batcher.put(event)
                except BatcherStopped:
                    # Shutting down: leave the rest un-acked; it is processed after the restart.
                    await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The hot path's own failure surfaces here too (put re-raises it). Faust would restart the agent,
            # which would fail again on every event while the process looks alive: stop the worker instead.
            component = "hot_path" if exc is self.batcher.error else "events_agent"
            await self.fail(component, exc)
            await asyncio.Event().wait()  # until the shutdown cancels us

    async def fail(self, component: str, exc: BaseException) -> None:
        """A component failed: report it (health, readiness, metrics) and stop the worker with a non-zero exit
        status, within the shutdown timeout whatever hangs, so that its supervisor restarts it."""
        if self.failed is not None:
            return
        self.failed = component
        log.critical(
            "%s failed (%r): stopping the worker (exit status 1) so that its supervisor restarts it", component, exc
        )
        self.metrics.component_up.labels(component).set(0)
        self.metrics.healthy.set(0)
        if self.watchdog is not None:
            self.watchdog.arm(self.settings.shutdown_timeout_s, 1, f"{component} failed")
        await self.crash(exc)

    def _owner_error(self) -> BaseException | None:
        if self.owner_process is not None:
            return self.owner_process.error
        return self.covisit_owner.error if self.covisit_owner is not None else None

    def healthy(self) -> bool:
        return self.failed is None

    def ready(self) -> bool:
        covisit_ready = self.covisit_replica is None or self.covisit_replica.ready
        return self.failed is None and self.replica.ready and covisit_ready and self._assigned

    def _redelivered(self, message: Any) -> None:
        self.metrics.redelivered.inc()
        if self.redelivery.dropped == 1 or self.redelivery.dropped % 1000 == 0:
            log.warning(
                "the consumer handed over %s offset %d again (highest handed over in this assignment: %s): "
                "dropped, its effect is already in the state (%d such records so far)",
                message.tp,
                message.offset,
                self.redelivery.high(message.tp),
                self.redelivery.dropped,
            )

    async def _on_partitions_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        self.redelivery.forget(revoked)
        self.hotpath.state_cache.clear()  # another worker may write these users' states before they come back

    async def _on_partitions_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Faust sends the revocation only after the in-flight events were acked, but gives up waiting after a
        # timeout: a batch finishing late could have cached states of partitions that are no longer ours
        self.hotpath.state_cache.clear()

    async def _on_rebalance_complete(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        # (mode's Signal type wants a keyword-only ``signal`` parameter it passes by name; **kwargs takes it)
        self._assigned = True

    # ------------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        s = self.settings
        self._gc_timer.install()
        if s.metrics_port:
            self._metrics_server = HealthServer(
                self.registry, s.metrics_host, s.metrics_port, healthy=self.healthy, ready=self.ready
            )
            self._metrics_server.start()
            log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", s.metrics_host, s.metrics_port)
        await self.replica.start()
        if self.covisit_replica is not None:
            await self.covisit_replica.start()
        if self.covisit_owner is not None:
            await self.covisit_owner.start()
        if self.owner_process is not None:  # not waited for: readiness does not depend on the owner
            await self.owner_process.start()
        await self.batcher.start()
        self.add_future(self._refresh_gauges())

    async def _on_app_shutdown(self, app: Any, *args: Any, **kwargs: Any) -> None:
        log.info("draining the hot path before Faust commits and stops")
        try:
            await self.batcher.stop(drain=True, timeout_s=self.settings.shutdown_timeout_s / 2)
        except Exception as exc:  # it failed earlier: its events stay un-acked (processed after the restart)
            log.warning("the hot path had failed: %r", exc)
        if self.hotpath.covisit_out is not None:  # the drained events' deltas, held for the next flush
            with contextlib.suppress(Exception):
                await self.hotpath.covisit_out.close()
        # wait for the outputs in flight, then let their ack callbacks run, so the final commit includes them
        with contextlib.suppress(Exception):
            await self.app.producer.flush()
        await asyncio.sleep(0)

    async def on_stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.arm(self.settings.shutdown_timeout_s, 1, "stopping")
        with contextlib.suppress(Exception):
            await self.batcher.stop(drain=True, timeout_s=self.settings.shutdown_timeout_s / 2)
        if self.hotpath.covisit_out is not None:  # the drained events' deltas, held for the next flush
            with contextlib.suppress(Exception):
                await self.hotpath.covisit_out.close()
        if self.owner_process is not None:  # after the hot path drained: SIGTERM, it publishes, commits, leaves
            await self.owner_process.stop(timeout_s=self.settings.shutdown_timeout_s / 3)
        if isinstance(self.covisit_scorer, RemoteScorer):
            self.covisit_scorer.close()
        if self._serve_dir is not None:
            shutil.rmtree(self._serve_dir, ignore_errors=True)
        await self.replica.stop(snapshot=True)
        if self.covisit_owner is not None:
            await self.covisit_owner.stop()  # publishes what it merged, commits, leaves the group
        if self.covisit_replica is not None:
            await self.covisit_replica.stop()
        self.pool.shutdown(wait=True, cancel_futures=False)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self._gc_timer.remove()
        self._lock.release()

    async def _refresh_gauges(self) -> None:
        m = self.metrics
        while not self.should_stop:
            for component, error in (
                ("catalogue_replica", self.replica.error),
                ("hot_path", self.batcher.error),
                ("covisit_replica", self.covisit_replica.error if self.covisit_replica is not None else None),
                ("covisit_owner", self._owner_error()),
            ):
                if error is not None:
                    await self.fail(component, error)
                    return
            if self.covisit is not None:
                m.covisit_rows.set(len(self.covisit))
            st = self.index.stats()
            m.index_items.set(st.items)
            m.index_capacity.set(st.capacity)
            m.index_deleted.set(st.deleted_slots)
            m.index_ready.set(1 if self.ready() else 0)
            last = self.replica.stats.last_snapshot_wall
            m.snapshot_age.set(float("nan") if last is None else time.time() - last)
            if isinstance(self.encoder, CachedEncoder):
                cs = self.encoder.stats
                hits0, misses0 = self._cache_seen
                m.encoder_cache.labels("hit").inc(max(0, cs.hits - hits0))
                m.encoder_cache.labels("miss").inc(max(0, cs.misses - misses0))
                self._cache_seen = (cs.hits, cs.misses)
            sc = self.hotpath.state_cache
            hits0, misses0 = self._state_cache_seen
            m.state_cache.labels("hit").inc(max(0, sc.hits - hits0))
            m.state_cache.labels("miss").inc(max(0, sc.misses - misses0))
            self._state_cache_seen = (sc.hits, sc.misses)
            rs = self.replica.stats
            for op, total in (("upsert", rs.upserts), ("delete", rs.deletes), ("unavailable", rs.unavailable)):
                seen = self._catalog_seen.get(op, 0)
                if total > seen:
                    m.catalog_updates.labels(op).inc(total - seen)
                    self._catalog_seen[op] = total
            for partition, lag in self.replica.lag().items():
                m.lag.labels("catalog", str(partition)).set(lag)
            self._adapt_fetch()
            with contextlib.suppress(Exception):  # the consumer may not be started yet
                assigned = self.app.consumer.assignment()
                m.assigned.set(sum(1 for tp in assigned if tp.topic == self.settings.events_topic))
            monitor = self.app.monitor
            for tp, end in list(getattr(monitor, "tp_end_offsets", {}).items()):
                if tp.topic == self.settings.events_topic:
                    read = getattr(monitor, "tp_read_offsets", {}).get(tp, 0)
                    m.lag.labels("events", str(tp.partition)).set(max(0, end - read - 1))
            await self.sleep(1.0)

    def _adapt_fetch(self) -> None:
        """Hold the events consumer's fetches while the stream is busy, fetch eagerly when it is quiet
        (:class:`~streamrec.streams.faust_app.FetchPolicy`)."""
        items, now = self.batcher.items, time.monotonic()
        seen, then = self._fetch_seen
        self._fetch_seen = (items, now)
        change = self.fetch_policy.update(items - seen, now - then)
        if change is None:
            return
        running = False
        with contextlib.suppress(Exception):  # no consumer yet: recorded all the same, it starts with them
            running = set_events_fetch(self.app, *change)
        log.info(
            "events consumer: fetches %s (max wait %d ms, min %d bytes) at %.0f events/s%s",
            "held" if self.fetch_policy.holding else "eager",
            change[0],
            change[1],
            (items - seen) / max(1e-9, now - then),
            "" if running else " (for the consumer Faust starts next)",
        )


def freeze_startup_objects() -> None:
    """Collect once, then move every surviving object (modules, the catalogue, the model's Python side) into
    the GC's permanent generation, so later full collections no longer traverse them: measured in
    ``streamrec bench``, full (generation 2) collections of a serving worker took ~80 ms each -- a p99 event at
    500 events/s -- because they walked every start-up object. Objects created later are collected as usual."""
    if gc.get_freeze_count():  # once per process (an agent restarted after a rebalance comes here again)
        return
    gc.collect()
    gc.freeze()
    log.info("GC: %d start-up objects frozen out of full collections", gc.get_freeze_count())
