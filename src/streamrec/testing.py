"""Helpers for testing code built on streamrec against a real Apache Kafka broker.

Used by streamrec's own test suite; public so that users can test their consumers the same way:
a session-wide broker (reused if one answers, else started with :class:`LocalKafka`), and fresh,
uniquely named topics and consumer groups per test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from streamrec.localkafka import LocalKafka, LocalKafkaConfig

T = TypeVar("T")

__all__ = ["KafkaForTests", "create_topics", "delete_topics", "run_off_loop", "start_broker", "unique_name"]


@dataclass(frozen=True)
class KafkaForTests:
    """A broker for a test session. ``started_here``: this session started it and will stop it."""

    bootstrap: str
    broker: LocalKafka
    started_here: bool

    def stop_if_started_here(self) -> None:
        if self.started_here:
            self.broker.down()


def start_broker(host: str, port: int, state_dir: Path) -> KafkaForTests:
    """Reuse a broker answering at host:port, or start one with the project's own LocalKafka."""
    broker = LocalKafka(LocalKafkaConfig(host=host, port=port, home=state_dir / f"kafka-{port}"))
    already = broker.status().running
    if not already:
        broker.up()
    return KafkaForTests(bootstrap=broker.config.bootstrap, broker=broker, started_here=not already)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_off_loop(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on a fresh event loop in another thread; callable from sync or async code."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create(bootstrap: str, topics: dict[str, int], config: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=p, replication_factor=1, topic_configs=config) for n, p in topics.items()]
        )
    finally:
        await admin.close()


async def _delete(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def create_topics(bootstrap: str, topics: dict[str, int], config: dict[str, str] | None = None) -> None:
    """Create topics ``{name: partitions}`` (replication factor 1)."""
    run_off_loop(_create(bootstrap, topics, config or {}))


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Delete topics; errors (e.g. already gone) are ignored: this is cleanup."""
    names = list(topics)
    if names:
        with contextlib.suppress(Exception):
            run_off_loop(_delete(bootstrap, names))
