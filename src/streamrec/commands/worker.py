"""``streamrec worker``: one stream worker (Faust app + catalogue replica + hot path + /metrics)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from streamrec.config import add_settings_arguments, settings_from_args
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
    from streamrec.streams.worker import covisit_topics

    deltas, rows = covisit_topics(s)
    rf = s.replication_factor
    return [TopicSpec(deltas, s.partitions, replication_factor=rf),
            TopicSpec(rows, s.items_partitions, (("cleanup.policy", "compact"),), replication_factor=rf)]


def run(args: argparse.Namespace) -> int:
    import faust

    from streamrec.commands.export import default_model_dir
    from streamrec.streams.worker import StreamWorker, load_encoder

    settings = settings_from_args(WorkerSettings, args)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    counts = asyncio.run(ensure_topics(settings.bootstrap, topic_specs(settings), create=settings.create_topics))
    partitions = counts[settings.events_topic]
    encoder = load_encoder(settings, settings.model_dir or default_model_dir())
    log.info("encoder: %s", encoder)
    covisit_partitions = counts.get(f"{settings.app_id}-covisit-deltas")
    worker = StreamWorker(settings, encoder=encoder, partitions=partitions, covisit_partitions=covisit_partitions)
    faust.Worker(
        worker.app, worker, loglevel=logging.getLevelName(logging.getLogger().level), quiet=True,
    ).execute_from_commandline()
    return 0
