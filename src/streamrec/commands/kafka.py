"""``streamrec kafka up | down | status``: the local single-node Apache Kafka."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.localkafka import KAFKA_VERSION, LocalKafka, LocalKafkaConfig
from streamrec.localkafka.broker import _default_cache_dir, _default_state_dir
from streamrec.localkafka.secure import client_environment

PLAINTEXT_PORT = 9092
SECURE_PORT = 9095  # 9095 SASL_SSL, 9096 controller, 9097 mutual TLS: clear of 9092/9093


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_KAFKA_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="address the broker binds to and advertises")
    port: int = Field(0, ge=0, description="client port (0: 9092, or 9095 with --secure)")
    secure: bool = Field(
        False,
        description="SASL_SSL (SCRAM) listener on the port, mutual TLS on port + 2, ACLs enforced, "
        "a throw-away CA; passwords and certificates in the home",
    )
    controller_port: int = Field(0, description="KRaft controller port (0: port + 1)")
    version: str = Field(KAFKA_VERSION, description="Apache Kafka version resolved from Maven Central")
    home: Path | None = Field(None, description="PID file, logs, config and data (default: per-port state dir)")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="where resolved jars are cached")
    heap: str = Field("512m", description="JVM heap size")
    start_timeout_s: float = Field(120.0, description="seconds to wait for the broker to answer")

    @property
    def effective_port(self) -> int:
        return self.port or (SECURE_PORT if self.secure else PLAINTEXT_PORT)

    def to_config(self) -> LocalKafkaConfig:
        port = self.effective_port
        return LocalKafkaConfig(
            host=self.host,
            port=port,
            controller_port=self.controller_port,
            version=self.version,
            home=self.home or _default_state_dir() / f"kafka-{port}",
            secure=self.secure,
            cache_dir=self.cache_dir,
            heap=self.heap,
            start_timeout_s=self.start_timeout_s,
        )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kafka",
        help="start/stop/inspect a local single-node Apache Kafka (KRaft)",
        description="Resolve Apache Kafka's jars with Maven, format KRaft storage, start one broker+controller "
        "bound to the configured address; stop it by PID. --secure: the same broker with TLS, SASL/SCRAM and ACLs "
        "(another port and home than the plain one).",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    add_settings_arguments(p, KafkaSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(KafkaSettings, args)
    broker = LocalKafka(settings.to_config())
    if args.action == "up":
        status = broker.up()
    elif args.action == "down":
        stopped = broker.down()
        status = broker.status()
        if not stopped:
            print("no broker started by streamrec was running")
    else:
        status = broker.status()
    print(status.describe())
    if settings.secure and status.running and not status.external:
        layout = broker.secure_layout
        print(
            f"mutual TLS listener: {broker.config.host}:{broker.config.mtls_port} (client certificate "
            f"{layout.tls.client_cert}, key {layout.tls.client_key})"
        )
        print(
            f"super-user for admin work: admin (password in {layout.password_file('admin')}; "
            f"Kafka tools: --command-config {layout.admin_properties})"
        )
        print("connect as the user 'streamrec' (it has no ACLs yet: grant them, see README 'Production Kafka'):")
        for key, value in client_environment(layout, status.bootstrap).items():
            print(f"  export {key}={value}")
    if args.action == "status":
        return 0 if status.running else 3
    if args.action == "down":
        return 0 if not status.running or status.external else 1
    return 0 if status.running else 1
