"""Prometheus metrics of a stream worker. The registry is injected (tests pass a fresh one).

Names follow ``streamrec_<subsystem>_<name>_<unit>``; durations are histograms in seconds with
buckets from 50 µs (single stages) to 30 s (lag after a restart).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

STAGES = ("queue", "decode", "state", "encode", "index", "publish")


class WorkerMetrics:
    """Every metric the worker exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.end_to_end = Histogram(
            "streamrec_pipeline_end_to_end_seconds",
            "Event to recommendation produced. clock=event_ts: from the event's own timestamp; "
            "clock=record_in: from the moment the worker received the record.",
            ["clock"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "streamrec_pipeline_stage_seconds",
            "Time per hot-path stage (batch stages are charged to every event of the batch).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamrec_pipeline_batch_size_events",
            "Events per hot-path micro-batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "streamrec_pipeline_events_total",
            "Events consumed, by type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamrec_pipeline_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.redelivered = Counter(
            "streamrec_pipeline_redelivered_total",
            "Event records the consumer handed over a second time within one assignment of their partition"
            " (Faust's seek to the committed offsets after a recovery), dropped: their effect is already in the"
            " state.",
            registry=r,
        )
        self.clamped_timestamps = Counter(
            "streamrec_pipeline_clamped_timestamps_total",
            "Events stamped too far in the future (producer clock skew), clamped to the worker's clock.",
            registry=r,
        )
        self.isolated_batches = Counter(
            "streamrec_pipeline_isolated_batches_total",
            "Micro-batches that raised and were re-run event by event to isolate the failing event.",
            registry=r,
        )
        self.component_up = Gauge(
            "streamrec_worker_component_up",
            "1 while a component of the worker runs, 0 once it failed (the worker then exits non-zero).",
            ["component"],
            registry=r,
        )
        self.healthy = Gauge(
            "streamrec_worker_healthy", "1 while every component of the worker runs (same as /healthz).", registry=r
        )
        self.recommendations = Counter(
            "streamrec_pipeline_recommendations_total",
            "Recommendation messages produced.",
            registry=r,
        )
        self.fallbacks = Counter(
            "streamrec_pipeline_fallbacks_total",
            "Recommendations served by the popularity fallback.",
            ["reason"],
            registry=r,
        )
        self.encoder_batch = Histogram(
            "streamrec_encoder_batch_size_texts",
            "Texts per encoder call (cache misses only).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.encoder_seconds = Histogram(
            "streamrec_encoder_inference_seconds",
            "Encoder call duration (tokenize + inference).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.encoder_cache = Counter(
            "streamrec_encoder_cache_lookups_total",
            "Embedding cache lookups by result.",
            ["result"],
            registry=r,
        )
        self.state_cache = Counter(
            "streamrec_session_state_cache_lookups_total",
            "Session state reads by result: hit (the decoded state this worker wrote last, kept in memory) or"
            " miss (read from the table and decoded).",
            ["result"],
            registry=r,
        )
        self.encoder_info = Info(
            "streamrec_encoder",
            "Encoder in use: execution provider, model variant, manifest hash, load-time "
            "self-check (passed | fallback | off) and, after a fallback, the variant passed over and why.",
            registry=r,
        )
        self.encoder_self_check = Gauge(
            "streamrec_encoder_self_check_cosine",
            "Load-time self-check: cosine vs the fp32 reference embeddings "
            "(stat mean | min) of each variant checked on this machine.",
            ["variant", "stat"],
            registry=r,
        )
        self.index_items = Gauge("streamrec_index_items", "Live items in the index.", registry=r)
        self.index_capacity = Gauge("streamrec_index_capacity_items", "Allocated index slots.", registry=r)
        self.index_deleted = Gauge("streamrec_index_deleted_items", "Deleted (reusable) index slots.", registry=r)
        self.index_ready = Gauge(
            "streamrec_index_ready",
            "1 once the catalogue replica caught up with the items topic and the worker holds its partitions.",
            registry=r,
        )
        self.snapshot_age = Gauge(
            "streamrec_index_snapshot_age_seconds", "Seconds since the last index snapshot.", registry=r
        )
        self.catalog_updates = Counter(
            "streamrec_index_updates_total", "Catalogue changes applied to the index.", ["op"], registry=r
        )
        self.lag = Gauge(
            "streamrec_kafka_consumer_lag_records",
            "Records behind the end of each partition.",
            ["consumer", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "streamrec_kafka_assigned_partitions", "Events partitions assigned to this worker.", registry=r
        )
        self.gc_pause = Histogram(
            "streamrec_python_gc_pause_seconds",
            "Stop-the-world pauses of Python's cyclic garbage collector, by generation (every thread waits).",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.live_evaluated = Counter(
            "streamrec_quality_live_evaluated_total",
            "Events that named an item after the user had been shown a list (the live quality metric's points), "
            "by event type.",
            ["type"],
            registry=r,
        )
        self.live_hits = Counter(
            "streamrec_quality_live_hits_total",
            "Evaluated events whose item was in the list last shown to that user (hit@K), by event type.",
            ["type"],
            registry=r,
        )
        self.live_reciprocal_rank = Counter(
            "streamrec_quality_live_reciprocal_rank_total",
            "Sum of 1/rank of the event's item in the list last shown (0 when absent): MRR@K = this / evaluated.",
            ["type"],
            registry=r,
        )
        self.covisit_deltas = Counter(
            "streamrec_covisit_deltas_total",
            "Co-visitation row deltas: sent by this worker's hot path (merged per row over the delta interval), "
            "merged by an item owner.",
            ["op"],
            registry=r,
        )
        self.covisit_rows = Gauge(
            "streamrec_covisit_rows", "Items with a co-visitation row in this worker.", registry=r
        )
        self.covisit_published = Counter(
            "streamrec_covisit_rows_published_total",
            "Co-visitation rows this worker published as owner.",
            registry=r,
        )
        self.covisit_invalid = Counter(
            "streamrec_covisit_invalid_messages_total",
            "Unreadable co-visitation messages skipped, by topic: deltas (the owner; never applied), rows (the "
            "owner's replica; and rows this worker stored undecoded and found unreadable when it first served them: "
            "served empty).",
            ["topic"],
            registry=r,
        )
        self.covisit_scored = Counter(
            "streamrec_covisit_scored_total",
            "Events whose co-visitation candidates were scored, by who scored them: owner (the owner process, "
            "STREAMREC_COVISIT_SERVING=owner) or local (this worker's replica: serving=local, or the owner did not "
            "answer).",
            ["by"],
            registry=r,
        )
        self.covisit_owner_restarts = Counter(
            "streamrec_covisit_owner_restarts_total",
            "Times this worker restarted its co-visitation owner process after it exited unexpectedly.",
            registry=r,
        )
        self.build_info = Info("streamrec_build", "streamrec version and model manifest hash.", registry=r)

    def prime(self, sources: Sequence[str]) -> None:
        """Create the series whose label values are known up front, at 0, so that dashboards and
        ``rate()`` show 0 rather than nothing before the first event of a kind."""
        from streamrec.streams.schemas import DeadLetterReason, EventType

        for clock in ("event_ts", "record_in"):
            self.end_to_end.labels(clock)
        for stage in STAGES:
            self.stage.labels(stage)
        for kind in EventType:
            for outcome in ("recommended", "fallback", "duplicate"):
                self.events.labels(kind.value, outcome)
        self.events.labels("invalid", "dead_letter")
        for source in sources:
            for reason in DeadLetterReason:
                self.dead_letters.labels(source, reason.value)
        for fallback in ("no_session_vector", "no_neighbours"):
            self.fallbacks.labels(fallback)
        for result in ("hit", "miss"):
            self.encoder_cache.labels(result)
        for op in ("upsert", "delete", "unavailable"):
            self.catalog_updates.labels(op)
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)
        for kind in EventType:
            if kind is not EventType.SEARCH:
                self.live_evaluated.labels(kind.value)
                self.live_hits.labels(kind.value)
                self.live_reciprocal_rank.labels(kind.value)
        for op in ("sent", "merged"):
            self.covisit_deltas.labels(op)
        for by in ("owner", "local"):
            self.covisit_scored.labels(by)
        for topic in ("deltas", "rows"):
            self.covisit_invalid.labels(topic)


class GcPauseTimer:
    """Times every collection of Python's cyclic GC into ``histogram{generation}`` (``gc.callbacks``; the
    callbacks run with the GIL held, in the thread that triggered the collection)."""

    def __init__(self, histogram: Histogram) -> None:
        self._children = {g: histogram.labels(str(g)) for g in (0, 1, 2)}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            child = self._children.get(int(info.get("generation", 2)))
            if child is not None:
                child.observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
