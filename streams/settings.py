"""The stream worker's settings: one frozen object, every field a ``STREAMREC_*`` env var and a flag.

Only entry points instantiate it (that is when the environment is read); library code receives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streamrec.encoders.providers import ProviderName
from streamrec.index import IndexKind
from streamrec.streams.core import CoreConfig
from streamrec.streams.covisit import CovisitConfig
from streamrec.streams.eventloop import EventLoopKind
from streamrec.streams.schemas import EventType
from streamrec.streams.security import KafkaSecuritySettings
from streamrec.streams.session import DEFAULT_STRATEGY, SessionConfig, StrategyName

_SESSION = SessionConfig()  # the session defaults live in SessionConfig; the settings only expose them
_CORE = CoreConfig()  # the signals' defaults live with the code that uses them
_COVISIT = CovisitConfig()


class WorkerSettings(KafkaSecuritySettings):
    """The worker's settings; the Kafka connection's security (``STREAMREC_KAFKA_*``) comes from the base class."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port])")
    app_id: str = Field("streamrec", description="Faust app id = events consumer group and state prefix")
    events_topic: str = Field("events", description="input: shoppers' events (key user_id)")
    items_topic: str = Field("items", description="input: item catalogue (key item_id, compacted)")
    recommendations_topic: str = Field("recommendations", description="output: top-K per event (key user_id)")
    dead_letter_topic: str = Field("dead-letter", description="output: rejected input with the reason in headers")
    partitions: int = Field(4, ge=1, description="partitions of events/recommendations/dead-letter (if created)")
    items_partitions: int = Field(2, ge=1, description="partitions of the items topic (if created)")
    replication_factor: int = Field(1, ge=1, description="replication factor of topics it creates")
    create_topics: bool = Field(True, description="create missing topics at start-up")

    # --- state ---------------------------------------------------------------------------
    data_dir: Path = Field(Path("streamrec-data"), description="worker-local state: RocksDB tables, index snapshots")
    worker_name: str = Field("", description="name of this worker (default: the host name); its own subdir of data_dir")

    # --- model ---------------------------------------------------------------------------
    model_dir: Path | None = Field(None, description="exported model dir (default: ~/.cache/streamrec/models/...)")
    provider: ProviderName = Field("auto", description="ONNX Runtime provider: auto, tensorrt, cuda or cpu")
    encoder_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads")
    encoder_cache_size: int = Field(50_000, ge=0, description="embedding cache entries (0: off)")
    encoder_self_check: Literal["fallback", "strict", "off"] = Field(
        "fallback",
        description="load-time check of the model variant on this CPU: fallback (a failing variant "
        "is replaced by the next, ending with fp32), strict (refuse to start) or off",
    )

    # --- recommendations -----------------------------------------------------------------
    k: int = Field(10, ge=1, le=1000, description="items per recommendation")
    strategy: StrategyName = Field(DEFAULT_STRATEGY, description="session strategy: decayed_mean or sequence")
    half_life_s: float = Field(_SESSION.half_life_s, gt=0, description="session decay half-life in seconds")
    blend_alpha: float = Field(
        _SESSION.blend_alpha, ge=0, le=1, description="sequence strategy: weight of the session-text vector"
    )
    exclude_seen: bool = Field(_SESSION.exclude_seen, description="exclude the user's recently seen items")
    exclude_purchased: bool = Field(_SESSION.exclude_purchased, description="exclude the user's purchased items")
    consumed_types: str = Field(
        ",".join(t.value for t in EventType if t in _SESSION.consumed_types),
        description="event types whose items are never recommended to that user again (others may be re-shown)",
    )
    max_consumed: int = Field(
        _SESSION.max_consumed, ge=0, description="consumed items remembered per user (8 bytes each)"
    )
    popularity_half_life_s: float = Field(86400.0, gt=0, description="popularity prior: half-life of counts, s")

    # --- collaborative signal (co-visitation graph, shared through Kafka) ----------------
    covisit: bool = Field(True, description="learn and serve the co-visitation signal")
    covisit_weight: float = Field(_CORE.covisit_weight, ge=0, description="blend weight of the co-visitation signal")
    text_weight: float = Field(_CORE.text_weight, ge=0, description="blend weight of the text (session vector) signal")
    popularity_weight: float = Field(_CORE.popularity_weight, ge=0, description="blend weight of the popularity prior")
    text_always: bool = Field(
        _CORE.text_always, description="search the index for every event (default: searches and cold users only)"
    )
    covisit_window: int = Field(
        _COVISIT.window, ge=0, description="learning: pair an item with the user's last N distinct items"
    )
    covisit_neighbours: int = Field(
        _COVISIT.neighbours, ge=1, description="neighbours kept per item (memory: items x this)"
    )
    covisit_half_life_s: float = Field(
        _COVISIT.half_life_s, gt=0, description="decay of co-visitation counts (event time)"
    )
    covisit_sources: int = Field(
        _COVISIT.sources, ge=0, description="serving: the user's last N distinct items used as sources"
    )
    covisit_damping: float = Field(
        _COVISIT.damping, ge=0, le=1, description="serving: popularity damping exponent of candidates"
    )
    covisit_source_norm: float = Field(
        _COVISIT.source_exponent, ge=0, le=1, description="serving: exponent of the source item's weight"
    )
    covisit_backward_weight: float = Field(
        _COVISIT.backward_weight, ge=0, description="learning: weight of (item -> earlier items) vs (earlier -> item)"
    )
    covisit_type_weighted: bool = Field(
        _COVISIT.type_weighted, description="learning: pairs weigh the event type's weight (default: every event 1)"
    )
    covisit_keep: int = Field(
        _COVISIT.keep, ge=0, description="learning: entries an owner's row keeps while updated (0: 4 x neighbours)"
    )
    covisit_per_source: int = Field(_COVISIT.per_source, ge=1, description="serving: neighbours read per source item")
    covisit_position_half_life: float = Field(
        _COVISIT.position_half_life, gt=0, description="serving: a source N items back weighs 0.5 ** (N / this)"
    )
    covisit_transition_weight: float = Field(
        _COVISIT.transition_weight, ge=0, description="serving: extra weight of the last item's direct successors"
    )
    covisit_owner: Literal["process", "inline", "external"] = Field(
        "process",
        description="where this worker's co-visitation owner runs: process (a child process it supervises), "
        "inline (on its serving event loop) or external (none: run `streamrec covisit-owner` yourself)",
    )
    covisit_serving: Literal["owner", "local"] = Field(
        "owner",
        description="who scores the co-visitation candidates: owner (the owner child process, off this worker's "
        "interpreter lock; locally whenever it does not answer in covisit_serving_timeout_ms) or local (this "
        "worker's replica); owner needs covisit_owner=process, else local",
    )
    covisit_serving_timeout_ms: float = Field(
        250.0, gt=0, description="the longest a batch waits for the owner process's scores before scoring locally, ms"
    )
    covisit_flush_interval_s: float = Field(
        5.0,
        gt=0,
        description="owners publish changed co-visitation rows once this much wall time or event time has passed "
        "(at most 4 times a second), s",
    )
    covisit_delta_interval_ms: float = Field(
        200.0,
        ge=0,
        description="the hot path merges co-visitation deltas for this long before it publishes them, ms "
        "(0: per batch)",
    )

    # --- hot path ------------------------------------------------------------------------
    batch_max: int = Field(
        256,
        ge=1,
        description="max events per micro-batch (reached only under a backlog, where larger batches spread "
        "each batch's fixed costs over more events)",
    )
    batch_linger_ms: float = Field(2.0, ge=0, description="max wait to fill a micro-batch, ms")
    pool_threads: int = Field(2, ge=1, description="threads for inference and index calls")
    producer_linger_ms: int = Field(
        0, ge=0, le=1000, description="Kafka producer linger: wait this long to fill a produce request, whole ms"
    )
    consumer_fetch_max_wait_ms: int = Field(
        5,
        ge=1,  # 0 would make an idle consumer fetch in a busy loop
        le=1500,
        description="while at least one event arrives per this many ms, the broker holds the events consumer's "
        "fetch up to this long for more records (below half that rate: Faust's own fetch, answered on the first "
        "record), ms",
    )
    consumer_fetch_min_bytes: int = Field(
        65536,
        ge=1,
        description="...or until this many bytes are there: a held fetch is one round trip per wait at most, "
        "for up to consumer_fetch_max_wait_ms more latency",
    )
    event_loop: EventLoopKind = Field(
        "auto",
        description="the worker's and its owner process's event loop: uvloop (auto: where installed), asyncio",
    )
    gil_switch_interval_ms: float = Field(
        5.0, gt=0, le=100, description="Python's thread switch interval (sys.setswitchinterval), ms"
    )
    gc_freeze: bool = Field(
        True,
        description="once ready, freeze the start-up objects out of Python's full GC collections (gc.freeze): "
        "they made each full collection pause the worker for ~80 ms",
    )
    queue_max: int = Field(1024, ge=1, description="events buffered between consumer and batcher (backpressure)")
    state_cache_users: int = Field(
        0,
        ge=0,
        description="decoded session states kept for the most recently active users, so that their next event "
        "skips the table read and JSON decode (cleared on every rebalance; 0: off, the default: end to end it "
        "did not pay, benchmarks/README.md)",
    )

    # --- catalogue replica ---------------------------------------------------------------
    index_kind: IndexKind = Field("hnsw", description="item index: hnsw (hnswlib graph) or exact (brute force)")
    index_m: int = Field(16, ge=4, description="HNSW M")
    index_ef_construction: int = Field(200, ge=8, description="HNSW ef_construction")
    index_ef: int = Field(32, ge=1, description="HNSW ef for k=10 (scaled with k and exclusions; measured default)")
    index_full_scan_below: int = Field(
        5000, ge=0, description="catalogues up to this many items are searched by an exact full scan (0: never)"
    )
    snapshot_interval_s: float = Field(60.0, gt=0, description="seconds between index snapshots (if changed)")

    static_membership: bool = Field(
        True, description="static consumer-group membership (id app_id:worker_name): a restart rejoins at once"
    )
    session_timeout_s: float = Field(
        10.0, ge=6, le=90, description="consumer-group session timeout: a dead worker's partitions move after it"
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="a stop (SIGTERM, or a failed component) that takes longer ends the process"
    )

    # --- observability -------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="address the /metrics server binds to")
    metrics_port: int = Field(9464, ge=0, description="port of the /metrics server (0: off)")
