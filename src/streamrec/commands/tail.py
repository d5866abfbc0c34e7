"""``streamrec tail``: print recommendations as they arrive, with their end-to-end latency.

One line per message: the user, latency = now - the event's ``ts`` (the replay sets ``ts`` to the
send time, so this is end to end), the message's own per-stage breakdown, and the top items (with
titles when ``--items-from-movielens`` is on). At the end: a p50/p95/p99 latency summary.
It reads every partition without a consumer group (it commits nothing), from the end by default.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.streams.schemas import InvalidMessage, Recommendation, decode_recommendation
from streamrec.streams.security import KafkaSecuritySettings


class TailSettings(KafkaSecuritySettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port])")
    recommendations_topic: str = Field("recommendations", description="the topic to print")
    from_beginning: bool = Field(False, description="start at the oldest message instead of the end")
    max_messages: int = Field(0, ge=0, description="stop after this many messages (0: no limit)")
    timeout_s: float = Field(0.0, ge=0, description="stop after this many seconds without a message (0: never)")
    top: int = Field(5, ge=1, description="items shown per message")
    items_from_movielens: bool = Field(False, description="show MovieLens-100K titles (from recbole) with item ids")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (nan if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LatencySummary:
    latencies_ms: list[float] = field(default_factory=list)
    invalid: int = 0

    def add(self, ms: float) -> None:
        self.latencies_ms.append(ms)

    def describe(self) -> str:
        xs = sorted(self.latencies_ms)
        if not xs:
            return f"0 recommendations ({self.invalid} unreadable)"
        return (
            f"{len(xs)} recommendations, end-to-end latency ms: p50 {percentile(xs, 50):.1f} "
            f"p95 {percentile(xs, 95):.1f} p99 {percentile(xs, 99):.1f} max {xs[-1]:.1f}"
            + (f" ({self.invalid} unreadable)" if self.invalid else "")
        )


def format_recommendation(
    rec: Recommendation, now_ms: int, titles: Mapping[str, str] | None = None, top: int = 5
) -> str:
    """``user u1 | 12.3 ms (encode 2.1, search 0.3) | 50 Star Wars (1977) 0.812; ...``"""
    stages = ", ".join(f"{k} {v:.1f}" for k, v in rec.latency_ms.items())
    shown = []
    for item_id, score in rec.items[:top]:
        title = titles.get(item_id) if titles else None
        shown.append(f"{item_id} {title} {score:.3f}" if title else f"{item_id} {score:.3f}")
    more = f" (+{len(rec.items) - top})" if len(rec.items) > top else ""
    flag = " [fallback]" if rec.fallback else ""
    return f"user {rec.user_id} | {now_ms - rec.event_ts} ms ({stages}){flag} | " + "; ".join(shown) + more


async def tail(settings: TailSettings, out: TextIO, summary: LatencySummary | None = None) -> LatencySummary:
    """Print until ``max_messages`` / ``timeout_s``; latencies collect in ``summary`` (also on Ctrl-C)."""
    from aiokafka import AIOKafkaConsumer

    from streamrec.streams.acls import Need, Operation, ResourceType, check_permissions
    from streamrec.streams.security import check_connection

    security = settings.kafka_security()
    await check_connection(settings.bootstrap, security)
    await check_permissions(
        settings.bootstrap,
        security,
        [
            Need(ResourceType.TOPIC, settings.recommendations_topic, Operation.READ, "the recommendations it prints"),
        ],
    )
    titles: dict[str, str] | None = None
    if settings.items_from_movielens:
        from streamrec.streams.movielens import movie_titles

        titles = movie_titles()
    consumer = AIOKafkaConsumer(
        settings.recommendations_topic,
        bootstrap_servers=settings.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if settings.from_beginning else "latest",
        **security.aiokafka_kwargs(),
    )
    summary = summary if summary is not None else LatencySummary()
    await consumer.start()
    try:
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now_ms = time.time_ns() // 1_000_000
            if not batch:
                if settings.timeout_s and time.monotonic() - idle_since >= settings.timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    try:
                        rec = decode_recommendation(record.value or b"")
                    except InvalidMessage as exc:
                        summary.invalid += 1
                        print(f"unreadable message at {record.partition}:{record.offset}: {exc}", file=out)
                        continue
                    summary.add(float(now_ms - rec.event_ts))
                    print(format_recommendation(rec, now_ms, titles, settings.top), file=out, flush=True)
                    if settings.max_messages and len(summary.latencies_ms) >= settings.max_messages:
                        return summary
    finally:
        await consumer.stop()
    return summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tail",
        help="print recommendations as they arrive, with end-to-end latency",
        description="Read the recommendations topic (all partitions, no consumer group) and print one line per "
        "message: user, latency now - event ts with the per-stage breakdown, the top items. Ends with p50/p95/p99.",
    )
    add_settings_arguments(p, TailSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    settings = settings_from_args(TailSettings, args)
    summary = LatencySummary()
    try:
        asyncio.run(tail(settings, sys.stdout, summary))
    finally:
        print(summary.describe())
    return 0
