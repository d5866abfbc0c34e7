"""The worker's topics, created at start-up with explicit partition counts.

``events``, ``recommendations`` and ``dead-letter`` share a partition count (keyed by user id, so a
user's events, state and outputs live on the same partition number). ``items`` is compacted: the
latest record per item id is the catalogue, a tombstone deletes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.errors import StreamrecError
from streamrec.streams.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


class TopicError(StreamrecError):
    """A topic is missing or has the wrong shape."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()
    replication_factor: int = 1


async def ensure_topics(
    bootstrap: str, specs: list[TopicSpec], *, create: bool = True, security: KafkaSecurity = PLAINTEXT
) -> dict[str, int]:
    """Create missing topics (unless ``create`` is false: then a missing topic is an error); return
    ``{name: partitions}`` of all of them, existing ones as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created = {s.name for s in missing}
        if missing and not create:
            raise TopicError(
                f"missing topics {[s.name for s in missing]}: create them or set STREAMREC_CREATE_TOPICS=true"
            )
        if missing:
            response = await admin.create_topics(
                [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config)) for s in missing]
            )
            _raise_create_errors(response, security)
            for s in missing:
                log.info("created topic %s (%d partitions)", s.name, s.partitions)
        described = await _describe_settled(admin, [s.name for s in specs], wait_s=CREATED_WAIT_S if missing else 0.0)
    finally:
        await admin.close()
    counts: dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == TOPIC_AUTHORIZATION_FAILED:
            raise TopicError(
                f"Kafka authorisation: {_who(security)} is not allowed DESCRIBE on topic {topic.get('topic')!r} "
                "(no ACL at all on it); ask the cluster's admin for the ACLs in README 'Production Kafka'"
            )
        if topic.get("error_code", 0):
            waited = f" {CREATED_WAIT_S:.0f} s after it was created" if topic.get("topic") in created else ""
            raise TopicError(f"topic {topic.get('topic')!r} is not available{waited} (error {topic['error_code']})")
        counts[str(topic["topic"])] = len(topic["partitions"])
    return counts


async def _describe_settled(admin: AIOKafkaAdminClient, names: list[str], wait_s: float) -> list[Any]:
    """Describe ``names``; right after CreateTopics the metadata may not list a new topic (or its leader) yet,
    so transient errors are retried for up to ``wait_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        described: list[Any] = await admin.describe_topics(names)
        transient = [t for t in described if t.get("error_code", 0) in _TRANSIENT]
        if not transient or asyncio.get_running_loop().time() >= deadline:
            return described
        await asyncio.sleep(0.2)


# How long a topic just created may take to appear in the broker's metadata. Usually well under a second; a
# KRaft broker starved of CPU (a loaded 2-core machine) was seen to take more than 10 s.
CREATED_WAIT_S = 30.0
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
_TRANSIENT = (UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE)
TOPIC_ALREADY_EXISTS = 36
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31


def _who(security: KafkaSecurity) -> str:
    return f"user {security.username!r}" if security.uses_sasl else f"this client ({security.protocol})"


def _raise_create_errors(response: Any, security: KafkaSecurity) -> None:
    """CreateTopics reports errors per topic in its response (aiokafka does not raise them)."""
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code in (0, TOPIC_ALREADY_EXISTS):  # another worker may have won the race
            continue
        if code in (TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED):
            raise TopicError(
                f"Kafka authorisation: {_who(security)} is not allowed CREATE on topic {name!r}: create it "
                "beforehand, or grant CREATE (README 'Production Kafka'); STREAMREC_CREATE_TOPICS=false makes a "
                "missing topic an error instead"
            )
        raise TopicError(f"creating topic {name!r} failed: error {code} {message or ''}".rstrip())


async def open_topic_replica(
    bootstrap: str,
    topic: str,
    *,
    start_offsets: dict[int, int] | None = None,
    client_kwargs: dict[str, Any] | None = None,
) -> tuple[AIOKafkaConsumer, dict[int, int]]:
    """A started consumer without a group, assigned EVERY partition of ``topic`` (a replica of the whole topic:
    the catalogue, the co-visitation rows), each at ``start_offsets[p]`` or the beginning, reading committed
    records only. Returns it with each partition's end offset as of now (the replica is ready at those)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **(client_kwargs or {}),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        starts = start_offsets or {}
        for tp in tps:
            if tp.partition in starts:
                consumer.seek(tp, starts[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        ends = {tp.partition: int(off) for tp, off in (await consumer.end_offsets(tps)).items()}
    except BaseException:
        await consumer.stop()
        raise
    return consumer, ends


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of ``topic`` as the consumer's metadata knows them (refreshed until it does, ~10 s)."""
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await consumer._client.force_metadata_update()  # aiokafka: no public call for this
        await asyncio.sleep(0.1)
    raise TopicError(f"topic {topic!r} has no partitions: create it (or let the worker create topics)")
