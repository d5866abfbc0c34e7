"""``streamrec replay`` into fresh topics on the real broker, consumed back and checked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer

from streamrec.commands.replay import ReplaySettings, replay
from streamrec.streams.movielens import N_ITEMS, load_movies, load_ratings, replay_events
from streamrec.streams.schemas import Event, ItemRecord, decode_event, decode_item
from streamrec.testing import KafkaForTests

pytestmark = pytest.mark.integration


async def _read_all(bootstrap: str, topic: str, want: int, timeout_ms: int = 15_000) -> list:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got = []
    try:
        while len(got) < want:
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                break
            for records in batch.values():
                got.extend(records)
        # nothing beyond what was expected
        extra = await consumer.getmany(timeout_ms=500)
        got.extend(r for records in extra.values() for r in records)
    finally:
        await consumer.stop()
    return got


async def test_replay_round_trip(kafka: KafkaForTests, new_topic: Callable[..., str]) -> None:
    items_topic = new_topic("items", partitions=2, config={"cleanup.policy": "compact"})
    events_topic = new_topic("events", partitions=3)
    settings = ReplaySettings(
        bootstrap=kafka.bootstrap,
        items_topic=items_topic,
        events_topic=events_topic,
        create_topics=False,
        limit=300,
        users=5,
        search_fraction=0.2,
        seed=3,
        rate=1000.0,
        event_id_prefix="t",
    )
    stats = await replay(settings)
    assert (stats.items, stats.events) == (N_ITEMS, 300)
    assert stats.elapsed_s >= 299 / 1000.0  # the open-loop schedule was kept

    items = await _read_all(kafka.bootstrap, items_topic, N_ITEMS)
    assert len(items) == N_ITEMS
    decoded_items = [decode_item(r.key, r.value) for r in items]
    assert all(isinstance(i, ItemRecord) for i in decoded_items)
    assert {r.key.decode() for r in items} == {m.item_id for m in load_movies()}

    records = await _read_all(kafka.bootstrap, events_topic, 300)
    assert len(records) == 300
    events: list[tuple[int, int, Event]] = []
    for r in records:
        e = decode_event(
            r.value, record_ts_ms=r.timestamp, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key
        )
        assert abs(e.ts_ms - r.timestamp) < 5_000  # ts = the wall clock at send time
        events.append((r.partition, r.offset, e))
    expected = list(
        replay_events(load_ratings(), load_movies(), limit=300, users=5, search_fraction=0.2, seed=3, id_prefix="t")
    )
    assert sorted(e.event_id for _, _, e in events) == sorted(x.event_id for x in expected)
    assert {e.user_id for _, _, e in events} <= {"1", "2", "3", "4", "5"}
    # one user -> one partition, and within it the replay's order
    for user in {e.user_id for _, _, e in events}:
        mine = sorted((p, o, e) for p, o, e in events if e.user_id == user)
        assert len({p for p, _, _ in mine}) == 1
        assert [e.event_id for _, _, e in mine] == [x.event_id for x in expected if x.user_id == user]
        assert [e.ts_ms for _, _, e in mine] == sorted(e.ts_ms for _, _, e in mine)
