"""The real broker started by the project's own command: produce, consume, commit, resume."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamrec.testing import KafkaForTests

pytestmark = pytest.mark.integration


async def _drain(consumer: AIOKafkaConsumer, want: int, timeout_ms: int = 15_000) -> list[tuple[int, bytes, bytes]]:
    got: list[tuple[int, bytes, bytes]] = []
    while len(got) < want:
        batch = await consumer.getmany(timeout_ms=timeout_ms)
        if not batch:
            break
        for tp, records in batch.items():
            got.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
    return got


async def test_produce_consume_commit_resume(
    kafka: KafkaForTests, new_topic: Callable[..., str], new_group: Callable[[str], str]
) -> None:
    bootstrap = kafka.bootstrap
    topic = new_topic("roundtrip", partitions=3)
    group = new_group("roundtrip")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(60):
            await producer.send(topic, key=f"user-{i % 7}".encode(), value=f"{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got = await _drain(consumer, 60)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(int(v) for _, _, v in got) == list(range(60))
    # one key -> one partition, and per-partition order is production order
    key_partitions: dict[bytes, set[int]] = {}
    for partition, key, _ in got:
        key_partitions.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in key_partitions.values())
    for key in key_partitions:
        values = [int(v) for _, k, v in got if k == key]
        assert values == sorted(values)

    # A new consumer in the same group resumes after the committed offsets: nothing is re-delivered.
    resumed = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await resumed.start()
    try:
        committed = {p: await resumed.committed(TopicPartition(topic, p)) for p in range(3)}
        assert sum(c or 0 for c in committed.values()) == 60
        assert await _drain(resumed, 1, timeout_ms=1500) == []
    finally:
        await resumed.stop()
