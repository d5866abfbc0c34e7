"""Helpers for testing code built on streamrec against a real Apache Kafka broker.

Used by streamrec's own test suite; public so that users can test their consumers the same way:
a session-wide broker (reused if one answers, else started with :class:`LocalKafka`), and fresh,
uniquely named topics and consumer groups per test. :func:`start_secure_broker` starts the secured
variant (SASL_SSL + SCRAM, mutual TLS, ACLs); every helper takes the connection's ``security``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamrec.localkafka import LocalKafka, LocalKafkaConfig
from streamrec.streams.security import PLAINTEXT, KafkaSecurity, KafkaSecuritySettings

T = TypeVar("T")

__all__ = [
    "KafkaForTests",
    "WorkerProcess",
    "consume",
    "create_topics",
    "delete_topics",
    "free_port",
    "produce",
    "run_off_loop",
    "security_environment",
    "start_broker",
    "start_secure_broker",
    "start_worker",
    "subprocess_environment",
    "unique_name",
    "worker_environment",
    "worker_topics",
]


@dataclass(frozen=True)
class KafkaForTests:
    """A broker for a test session. ``started_here``: this session started it and will stop it."""

    bootstrap: str
    broker: LocalKafka
    started_here: bool
    security: KafkaSecurity = PLAINTEXT  # secure brokers: the super-user's

    def stop_if_started_here(self) -> None:
        if self.started_here:
            self.broker.down()

    def as_user(self, username: str, password: str, mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
        """Secure broker: SASL_SSL as another SCRAM user (trusting the broker's CA)."""
        from pydantic import SecretStr

        return KafkaSecurity(
            protocol="SASL_SSL",
            ca_file=self.broker.secure_layout.tls.ca_cert,
            mechanism=mechanism,  # type: ignore[arg-type]
            username=username,
            password=SecretStr(password),
        )

    def mutual_tls(self) -> tuple[str, KafkaSecurity]:
        """Secure broker: the mutual-TLS listener's bootstrap and the generated client certificate."""
        tls = self.broker.secure_layout.tls
        return (
            f"{self.broker.config.host}:{self.broker.config.mtls_port}",
            KafkaSecurity(protocol="SSL", ca_file=tls.ca_cert, cert_file=tls.client_cert, key_file=tls.client_key),
        )


def start_broker(host: str, port: int, state_dir: Path) -> KafkaForTests:
    """Reuse a broker answering at host:port, or start one with the project's own LocalKafka."""
    broker = LocalKafka(LocalKafkaConfig(host=host, port=port, home=state_dir / f"kafka-{port}"))
    already = broker.status().running
    if not already:
        broker.up()
    return KafkaForTests(bootstrap=broker.config.bootstrap, broker=broker, started_here=not already)


def start_secure_broker(host: str, port: int, home: Path, users: dict[str, str] | None = None) -> KafkaForTests:
    """Start the secured local broker (SASL_SSL on ``port``, mutual TLS on ``port + 2``, ACLs) in ``home``
    with extra SCRAM ``users`` {name: password}; ``security`` is the super-user's. Never reuses a broker."""
    from pydantic import SecretStr

    from streamrec.localkafka.secure import ADMIN_USER

    broker = LocalKafka(
        LocalKafkaConfig(host=host, port=port, home=home, secure=True, users=tuple(sorted((users or {}).items())))
    )
    status = broker.up()
    if status.external:
        raise RuntimeError(f"a broker not started by this session answers at {status.bootstrap}")
    layout = broker.secure_layout
    admin = KafkaSecurity(
        protocol="SASL_SSL",
        ca_file=layout.tls.ca_cert,
        mechanism="SCRAM-SHA-512",
        username=ADMIN_USER,
        password=SecretStr(layout.password(ADMIN_USER)),
    )
    return KafkaForTests(bootstrap=broker.config.bootstrap, broker=broker, started_here=True, security=admin)


def security_environment(security: KafkaSecurity, password_file: Path | None = None) -> dict[str, str]:
    """``STREAMREC_KAFKA_*`` variables for a ``streamrec`` subprocess (password via the file if given)."""
    env: dict[str, str] = {"STREAMREC_KAFKA_SECURITY_PROTOCOL": security.protocol}
    for key, path in (
        ("CA_FILE", security.ca_file),
        ("CERT_FILE", security.cert_file),
        ("KEY_FILE", security.key_file),
    ):
        if path is not None:
            env[f"STREAMREC_KAFKA_{key}"] = str(path)
    if security.uses_sasl:
        env["STREAMREC_KAFKA_SASL_MECHANISM"] = security.mechanism
        env["STREAMREC_KAFKA_USERNAME"] = security.username or ""
        if password_file is not None:
            env["STREAMREC_KAFKA_PASSWORD_FILE"] = str(password_file)
        elif security.password is not None:
            env["STREAMREC_KAFKA_PASSWORD"] = security.password.get_secret_value()
    return env


def subprocess_environment(settings_env: dict[str, str]) -> dict[str, str]:
    """This process's environment updated with ``settings_env``; when that sets any ``STREAMREC_KAFKA_*``
    security variable, the inherited ones are dropped (a password and a password file must not mix)."""
    import os

    names = {f"STREAMREC_{n.upper()}" for n in KafkaSecuritySettings.model_fields}
    inherited = dict(os.environ)
    if names & settings_env.keys():
        inherited = {k: v for k, v in inherited.items() if k not in names}
    return {**inherited, **settings_env}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def worker_topics() -> dict[str, str]:
    """Fresh names for one worker's app id and topics, keyed by setting name (``events_topic``, ...)."""
    return {
        "app_id": unique_name("app"),
        "events_topic": unique_name("events"),
        "items_topic": unique_name("items"),
        "recommendations_topic": unique_name("recs"),
        "dead_letter_topic": unique_name("dlq"),
    }


def worker_environment(
    bootstrap: str, model_dir: Path, data_dir: Path, topics: dict[str, str], **settings: str
) -> dict[str, str]:
    """``STREAMREC_*`` variables for :func:`start_worker`: broker, model, data dir, ``topics`` (see
    :func:`worker_topics`) and any other setting by name (``partitions="1"`` -> ``STREAMREC_PARTITIONS``)."""
    return {
        "STREAMREC_BOOTSTRAP": bootstrap,
        "STREAMREC_MODEL_DIR": str(model_dir),
        "STREAMREC_DATA_DIR": str(data_dir),
        **{f"STREAMREC_{k.upper()}": v for k, v in {**topics, **settings}.items()},
    }


def run_off_loop(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on a fresh event loop in another thread; callable from sync or async code."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create(
    bootstrap: str, topics: dict[str, int], config: dict[str, str], security: KafkaSecurity = PLAINTEXT
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=p, replication_factor=1, topic_configs=config) for n, p in topics.items()]
        )
    finally:
        await admin.close()


async def _delete(bootstrap: str, topics: list[str], security: KafkaSecurity = PLAINTEXT) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def create_topics(
    bootstrap: str,
    topics: dict[str, int],
    config: dict[str, str] | None = None,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create topics ``{name: partitions}`` (replication factor 1)."""
    run_off_loop(_create(bootstrap, topics, config or {}, security))


def delete_topics(bootstrap: str, topics: Iterable[str], *, security: KafkaSecurity = PLAINTEXT) -> None:
    """Delete topics; errors (e.g. already gone) are ignored: this is cleanup."""
    names = list(topics)
    if names:
        with contextlib.suppress(Exception):
            run_off_loop(_delete(bootstrap, names, security))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    """A ``streamrec worker`` subprocess (real process: it can be SIGTERMed or SIGKILLed)."""

    proc: Any
    metrics_url: str
    log_path: Path

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics as ``{"name{label=...}": value}`` (empty if it does not answer)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def wait_until(self, predicate: Any, timeout_s: float = 120.0, what: str = "condition") -> dict[str, float]:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}) waiting for {what}:\n{self.log_tail()}")
            m = self.metrics()
            if m and predicate(m):
                return m
            time.sleep(0.25)
        raise TimeoutError(f"worker: no {what} within {timeout_s:.0f} s:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        self.wait_until(lambda m: m.get("streamrec_index_ready") == 1.0, timeout_s, "readiness")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful), SIGKILL if it does not exit in time; returns the exit code."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_worker(settings_env: dict[str, str], log_path: Path, metrics_port: int | None = None) -> WorkerProcess:
    """Start ``streamrec worker`` with ``STREAMREC_*`` settings; the metrics server binds to loopback."""
    import subprocess
    import sys

    port = metrics_port or free_port()
    env = {
        **subprocess_environment(settings_env),
        "STREAMREC_METRICS_HOST": "127.0.0.1",
        "STREAMREC_METRICS_PORT": str(port),
    }
    log_file = log_path.open("ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "--log-level", "INFO", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        log_file.close()
    return WorkerProcess(proc, f"http://127.0.0.1:{port}/metrics", log_path)


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Send ``(key, value)`` records in order with an idempotent producer and wait until all are acked."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, **security.aiokafka_kwargs())
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    *,
    want: int,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Any]:
    """Every record of ``topic`` from the beginning, until ``want`` arrived and ``idle_s`` passed quietly,
    or ``timeout_s`` is over."""
    import time

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **security.aiokafka_kwargs(),
    )
    await consumer.start()
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            n = sum(len(v) for v in batch.values())
            for records in batch.values():
                got.extend(records)
            if n:
                last_new = time.monotonic()
            elif len(got) >= want and time.monotonic() - last_new >= idle_s:
                break
    finally:
        await consumer.stop()
    return got
