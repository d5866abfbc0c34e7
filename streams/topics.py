"""The worker's topics, created at start-up with explicit partition counts.

``events``, ``recommendations`` and ``dead-letter`` share a partition count (keyed by user id, so a
user's events, state and outputs live on the same partition number). ``items`` is compacted: the
latest record per item id is the catalogue, a tombstone deletes.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)


class TopicError(StreamrecError):
    """A topic is missing or has the wrong shape."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()
    replication_factor: int = 1


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], *, create: bool = True) -> dict[str, int]:
    """Create missing topics (unless ``create`` is false: then a missing topic is an error); return
    ``{name: partitions}`` of all of them, existing ones as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing and not create:
            raise TopicError(
                f"missing topics {[s.name for s in missing]}: create them or set STREAMREC_CREATE_TOPICS=true"
            )
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config))
                        for s in missing
                    ]
                )
            for s in missing:
                log.info("created topic %s (%d partitions)", s.name, s.partitions)
        described = await admin.describe_topics([s.name for s in specs])
    finally:
        await admin.close()
    counts: dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0):
            raise TopicError(f"topic {topic.get('topic')!r} is not available (error {topic['error_code']})")
        counts[str(topic["topic"])] = len(topic["partitions"])
    return counts
