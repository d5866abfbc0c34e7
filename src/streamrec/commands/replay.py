"""``streamrec replay``: MovieLens-100K into Kafka -- the catalogue to ``items``, the ratings to ``events``.

Items go first (all 1,682, then a flush), then the events in rating-timestamp order on an open-loop
schedule: event i is sent at t0 + i / rate (or at its original time offset / speed-up), never
waiting for answers; if the producer falls behind, events go out as fast as it accepts them and the
lag is reported. ``ts`` is the wall clock at send time. Rules and schemas:
:mod:`streamrec.streams.movielens`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError
from streamrec.streams.movielens import load_movies, load_ratings, movie_item, replay_events, schedule_offsets_s
from streamrec.streams.security import KafkaSecuritySettings

log = logging.getLogger(__name__)


class ReplaySettings(KafkaSecuritySettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port])")
    events_topic: str = Field("events", description="where the ratings go as events (key user_id)")
    items_topic: str = Field("items", description="where the movies go (key item_id, compacted)")
    partitions: int = Field(4, ge=1, description="partitions of the events topic (if created)")
    items_partitions: int = Field(2, ge=1, description="partitions of the items topic (if created)")
    create_topics: bool = Field(True, description="create missing topics")
    rate: float = Field(0.0, ge=0, description="events per second, open loop (0: no rate limit)")
    speedup: float = Field(0.0, ge=0, description="replay at original timing / speedup (0: off; not with rate)")
    limit: int = Field(0, ge=0, description="send at most this many events (0: all)")
    users: int = Field(0, ge=0, description="only the ratings of the N lowest user ids (0: all 943)")
    search_fraction: float = Field(0.1, ge=0, le=1, description="fraction of ratings preceded by a search event")
    seed: int = Field(0, description="seed of the synthetic searches")
    event_id_prefix: str = Field("ml100k", description="event ids are <prefix>:<user>:<item>")
    send_items: bool = Field(True, description="send the catalogue before the events")
    linger_ms: int = Field(1, ge=0, description="producer linger, ms")


@dataclass
class ReplayStats:
    items: int = 0
    events: int = 0
    searches: int = 0
    elapsed_s: float = 0.0
    max_lag_s: float = 0.0  # how far behind its schedule the most late send was

    def describe(self) -> str:
        rate = self.events / self.elapsed_s if self.elapsed_s > 0 else float("inf")
        return (
            f"sent {self.items} items and {self.events} events ({self.searches} searches) "
            f"in {self.elapsed_s:.2f} s ({rate:.0f} events/s); max lag behind schedule {self.max_lag_s * 1000:.1f} ms"
        )


async def replay(settings: ReplaySettings) -> ReplayStats:
    """Send the catalogue and the events as ``settings`` say; returns what was sent."""
    from streamrec.streams.acls import Need, Operation, ResourceType, check_permissions
    from streamrec.streams.security import check_connection
    from streamrec.streams.topics import TopicSpec, ensure_topics

    if settings.rate > 0 and settings.speedup > 0:
        raise ConfigError("give --rate or --speedup, not both")
    movies = load_movies()
    events = list(
        replay_events(
            load_ratings(),
            movies,
            limit=settings.limit,
            users=settings.users,
            search_fraction=settings.search_fraction,
            seed=settings.seed,
            id_prefix=settings.event_id_prefix,
        )
    )
    offsets = schedule_offsets_s(events, rate=settings.rate, speedup=settings.speedup)
    security = settings.kafka_security()
    await check_connection(settings.bootstrap, security)
    specs = [TopicSpec(settings.events_topic, settings.partitions)]
    if settings.send_items:
        specs.insert(0, TopicSpec(settings.items_topic, settings.items_partitions, (("cleanup.policy", "compact"),)))
    await ensure_topics(settings.bootstrap, specs, create=settings.create_topics, security=security)
    needs = [Need(ResourceType.TOPIC, settings.events_topic, Operation.WRITE, "the events it replays")]
    if settings.send_items:
        needs.append(Need(ResourceType.TOPIC, settings.items_topic, Operation.WRITE, "the catalogue it sends"))
    await check_permissions(settings.bootstrap, security, needs)
    catalogue = [movie_item(m) for m in movies] if settings.send_items else []
    items = [(i.item_id.encode(), i.to_json_bytes()) for i in catalogue]
    return await send_records(
        settings.bootstrap,
        items_topic=settings.items_topic,
        items=items,
        events_topic=settings.events_topic,
        events=[(e.key, e.payload) for e in events],
        offsets=offsets,
        linger_ms=settings.linger_ms,
        searches=sum(e.type == "search" for e in events),
        client_kwargs=security.aiokafka_kwargs(),
    )


async def send_records(
    bootstrap: str,
    *,
    items_topic: str,
    items: Sequence[tuple[bytes, bytes]],
    events_topic: str,
    events: Sequence[tuple[bytes, Callable[[int], bytes]]],
    offsets: Sequence[float],
    linger_ms: int = 1,
    searches: int = 0,
    client_kwargs: dict[str, Any] | None = None,
) -> ReplayStats:
    """The replay's producing loop, for any catalogue and events: ``items`` first (then a flush), then each
    event at ``t0 + offsets[i]`` (open loop). An event is ``(key, payload)``: ``payload(now_ms)`` gives its value
    at send time. Idempotent producer, acks=all; every delivery is awaited before returning. ``client_kwargs``:
    the connection's security (``KafkaSecurity.aiokafka_kwargs()``)."""
    from aiokafka import AIOKafkaProducer

    stats = ReplayStats(searches=searches)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        **(client_kwargs or {}),
    )
    await producer.start()
    try:
        pending: deque[asyncio.Future[object]] = deque()

        async def settle(keep: int) -> None:
            while len(pending) > keep or (pending and pending[0].done()):
                await pending.popleft()  # raises if delivery failed

        started = time.monotonic()
        if items:
            for key, value in items:
                pending.append(await producer.send(items_topic, value, key=key))
                await settle(10_000)
            await producer.flush()
            await settle(0)
            stats.items = len(items)
            log.info("sent %d items to %s", stats.items, items_topic)
        t0 = time.monotonic()
        for (key, payload), offset in zip(events, offsets, strict=True):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                stats.max_lag_s = max(stats.max_lag_s, -delay)
            value = payload(time.time_ns() // 1_000_000)
            pending.append(await producer.send(events_topic, value, key=key))
            stats.events += 1
            await settle(10_000)
            if stats.events % 10_000 == 0:
                log.info("sent %d / %d events", stats.events, len(events))
        await producer.flush()
        await settle(0)
        stats.elapsed_s = time.monotonic() - started
    finally:
        await producer.stop()
    return stats


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay MovieLens-100K: movies to the items topic, ratings as events",
        description="Send the MovieLens-100K catalogue (from the installed recbole package) to the items topic, "
        "then its ratings as events in timestamp order at a chosen rate or speed-up. Ratings become events by "
        "rating: 5 purchase, 4 add_to_cart, 3 click, 1-2 view; a seeded fraction is preceded by a search.",
    )
    add_settings_arguments(p, ReplaySettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ReplaySettings, args)
    stats = asyncio.run(replay(settings))
    print(stats.describe())
    return 0
