"""``streamrec worker``: one stream worker (Faust app + catalogue replica + hot path + /metrics)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.streams.acls import Need, Operation, ResourceType, check_permissions
from streamrec.streams.eventloop import use_event_loop
from streamrec.streams.security import check_connection
from streamrec.streams.settings import WorkerSettings
from streamrec.streams.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a stream worker: events -> session state -> recommendations; items -> index",
        description="Consumes the events topic in the app's consumer group and ALL partitions of the items "
        "topic; publishes one recommendation per valid event; bad input goes to the dead-letter topic.",
    )
    add_settings_arguments(p, WorkerSettings)
    p.set_defaults(func=run)


def topic_specs(s: WorkerSettings) -> list[TopicSpec]:
    rf = s.replication_factor
    return [
        TopicSpec(s.events_topic, s.partitions, replication_factor=rf),
        TopicSpec(s.recommendations_topic, s.partitions, replication_factor=rf),
        TopicSpec(s.dead_letter_topic, s.partitions, replication_factor=rf),
        TopicSpec(s.items_topic, s.items_partitions, (("cleanup.policy", "compact"),), replication_factor=rf),
        *covisit_specs(s),
    ]


def covisit_specs(s: WorkerSettings) -> list[TopicSpec]:
    """The collaborative signal's internal topics: deltas (partitioned like events) and compacted rows."""
    if not s.covisit:
        return []
    from streamrec.streams.covisit_owner import covisit_topics

    deltas, rows = covisit_topics(s)
    rf = s.replication_factor
    return [
        TopicSpec(deltas, s.partitions, replication_factor=rf),
        TopicSpec(rows, s.items_partitions, (("cleanup.policy", "compact"),), replication_factor=rf),
    ]


def permissions_needed(s: WorkerSettings) -> list[Need]:
    """The ACLs a worker needs (README 'Production Kafka'); internal topics are checked once they exist."""
    t, g = ResourceType.TOPIC, ResourceType.GROUP
    return [
        Need(t, s.events_topic, Operation.READ, "the events it consumes"),
        Need(t, s.items_topic, Operation.READ, "the catalogue it indexes"),
        Need(t, s.recommendations_topic, Operation.WRITE, "its output"),
        Need(t, s.dead_letter_topic, Operation.WRITE, "rejected input goes there"),
        Need(g, s.app_id, Operation.READ, "the events consumer group: joining it and committing offsets"),
        *(
            Need(t, name, op, "Faust's internal topic")
            for name in internal_topics(s.app_id)
            for op in (Operation.READ, Operation.WRITE)
        ),
        *(
            [Need(g, f"{s.app_id}-covisit", Operation.READ, "the co-visitation owners' consumer group")]
            + [
                Need(t, spec.name, op, "the co-visitation signal's internal topic")
                for spec in covisit_specs(s)
                for op in (Operation.READ, Operation.WRITE)
            ]
        ),
    ]


def internal_topics(app_id: str) -> list[str]:
    """Topics Faust creates and uses: the session table's changelog and its assignor's leader topic."""
    return [f"{app_id}-sessions-changelog", f"{app_id}-__assignor-__leader"]


async def preflight(s: WorkerSettings) -> dict[str, int]:
    """Connect (fail fast with the cause), create/describe the topics, check the ACLs; before Faust starts,
    so that a worker that cannot work consumes nothing and commits nothing."""
    security = s.kafka_security()
    await check_connection(s.bootstrap, security)
    counts = await ensure_topics(s.bootstrap, topic_specs(s), create=s.create_topics, security=security)
    await check_permissions(s.bootstrap, security, permissions_needed(s))
    log.info("Kafka at %s: %s; topics and ACLs checked", s.bootstrap, security.describe())
    return counts


def run(args: argparse.Namespace) -> int:
    from streamrec.commands.export import default_model_dir
    from streamrec.streams.supervision import ShutdownWatchdog, SupervisedWorker
    from streamrec.streams.worker import StreamWorker, load_encoder

    settings = settings_from_args(WorkerSettings, args)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    log.info("event loop: %s", use_event_loop(settings.event_loop))
    counts = asyncio.run(preflight(settings))
    partitions = counts[settings.events_topic]
    encoder = load_encoder(settings, settings.model_dir or default_model_dir())
    log.info("encoder: %s", encoder)
    watchdog = ShutdownWatchdog()
    covisit_partitions = counts.get(f"{settings.app_id}-covisit-deltas")
    worker = StreamWorker(
        settings, encoder=encoder, partitions=partitions, covisit_partitions=covisit_partitions, watchdog=watchdog
    )
    SupervisedWorker(
        worker.app,
        worker,
        loglevel=logging.getLevelName(logging.getLogger().level),
        quiet=True,
        watchdog=watchdog,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    ).execute_from_commandline()
    return 0
