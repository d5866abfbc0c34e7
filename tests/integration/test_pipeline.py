"""The stream worker end to end on the real broker: a catalogue and events in, recommendations out."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streamrec.streams.deadletter import parse_dead_letter_headers
from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import KafkaForTests, WorkerProcess, consume, produce, start_worker, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = 5
CATALOGUE = {
    "shoe-1": "Red running shoes for road racing",
    "shoe-2": "Trail running shoes with grippy soles",
    "shoe-3": "Lightweight marathon running shoes",
    "shoe-4": "Leather office shoes, black",
    "shoe-5": "Kids' running sneakers with velcro",
    "coffee-1": "Espresso coffee beans, dark roast",
    "coffee-2": "Single-origin Ethiopian coffee beans",
    "coffee-3": "Decaf coffee beans, medium roast",
    "coffee-4": "Burr coffee grinder, stainless steel",
    "coffee-5": "Espresso machine with milk frother",
    "tent-1": "Two-person backpacking tent",
    "tent-2": "Family camping tent for six",
    "tent-3": "Ultralight hiking tent",
    "bag-1": "Down sleeping bag, -10 C",
    "bag-2": "Synthetic sleeping bag for summer",
    "book-1": "Cookbook of Italian pasta recipes",
    "book-2": "Science fiction novel about Mars",
    "book-3": "History of the Roman empire",
    "book-4": "Beginner's guide to Python programming",
    "book-5": "Thriller novel set in Oslo",
    "phone-1": "Smartphone with 128 GB storage",
    "phone-2": "Phone case, shockproof",
    "phone-3": "USB-C fast charger 65 W",
    "phone-4": "Wireless earbuds with noise cancelling",
    "tea-1": "Green tea leaves, sencha",
    "tea-2": "Earl Grey black tea bags",
    "tea-3": "Ceramic teapot with infuser",
    "yoga-1": "Non-slip yoga mat",
    "yoga-2": "Cork yoga block",
    "yoga-3": "Yoga pants, high waist",
}
GONE = "tent-2"  # deleted from the catalogue before any event


def _event(user: str, kind: str, n: int, **fields: Any) -> tuple[bytes, bytes]:
    doc = {"user_id": user, "type": kind, "event_id": f"{user}-{n}", **fields}
    return user.encode(), json.dumps(doc).encode()


BAD: list[tuple[bytes | None, bytes | None, str]] = [
    (b"u1", b"\xff\xfe\x00junk", "undecodable"),
    (b"u1", b"{not json", "invalid_json"),
    (b"u1", b"[1, 2, 3]", "not_an_object"),
    (b"u1", b'{"user_id": "u1", "type": "click"}', "missing_field"),
    (b"u1", b'{"user_id": "u1", "type": "click", "item_id": 42}', "wrong_type"),
    (b"u1", b'{"user_id": "u1", "type": "teleport", "item_id": "shoe-1"}', "unknown_type"),
    (b"u1", json.dumps({"user_id": "u1", "type": "search", "query": "x" * 5000}).encode(), "oversized"),
    (b"u1", b'{"user_id": "u1", "type": "view", "item_id": "shoe-1", "ts": -5}', "invalid_value"),
    (b"u1", None, "not_an_object"),
]


def _session_events() -> list[tuple[bytes, bytes]]:
    out = []
    scripts = {
        "u1": [
            ("search", {"query": "running shoes"}),
            ("click", {"item_id": "shoe-1"}),
            ("purchase", {"item_id": "shoe-2"}),
            ("view", {"item_id": "shoe-3"}),
        ],
        "u2": [
            ("view", {"item_id": "coffee-1"}),
            ("add_to_cart", {"item_id": "coffee-2"}),
            ("purchase", {"item_id": "coffee-2"}),
            ("search", {"query": "espresso"}),
        ],
        "u3": [
            ("click", {"item_id": "tent-1"}),
            ("purchase", {"item_id": "bag-1"}),
            ("view", {"item_id": "new-thing", "title": "Inflatable camping mattress"}),
        ],
        "u4": [("view", {"item_id": "no-such-item"})],  # no usable vector: fallback
    }
    for i in range(4):
        for user, steps in scripts.items():
            if i < len(steps):
                kind, fields = steps[i]
                out.append(_event(user, kind, i, **fields))
    return out


def _worker_env(kafka: KafkaForTests, model: Path, data: Path, **topics: str) -> dict[str, str]:
    return {
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        "STREAMREC_MODEL_DIR": str(model),
        "STREAMREC_DATA_DIR": str(data),
        "STREAMREC_K": str(K),
        "STREAMREC_PARTITIONS": "2",
        "STREAMREC_SNAPSHOT_INTERVAL_S": "2",
        **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
    }


@pytest.fixture
def topics() -> dict[str, str]:
    return {
        "app_id": unique_name("app"),
        "events_topic": unique_name("events"),
        "items_topic": unique_name("items"),
        "recommendations_topic": unique_name("recs"),
        "dead_letter_topic": unique_name("dlq"),
    }


@pytest.fixture
def workers() -> Any:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


async def test_end_to_end(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    items = [(k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()]
    items.append((GONE.encode(), None))  # tombstone
    items.append((b"bad-item", b'{"item_id": "other-id", "title": "key mismatch"}'))
    worker = start_worker(_worker_env(kafka, exported_model, tmp_path / "w", **topics), tmp_path / "worker.log")
    workers.append(worker)
    worker.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
    await produce(kafka.bootstrap, topics["items_topic"], items)
    worker.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE) - 1, what="catalogue")

    good = _session_events()
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for i, record in enumerate(good):  # bad input interleaved with valid events
        mixed.append(record)
        if i < len(BAD):
            mixed.append(BAD[i][:2])
    await produce(kafka.bootstrap, topics["events_topic"], mixed)

    recs_raw = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(good))
    recs = [decode_recommendation(r.value) for r in recs_raw]
    by_event = defaultdict(list)
    for rec in recs:
        by_event[rec.event_id].append(rec)
    want_ids = {json.loads(v)["event_id"] for _, v in good}
    assert set(by_event) == want_ids
    assert all(len(v) == 1 for v in by_event.values()), "exactly one recommendation per valid event"

    purchased: dict[str, set[str]] = defaultdict(set)
    for _key, value in good:  # per user, events are recommended in order
        doc = json.loads(value)
        (rec,) = by_event[doc["event_id"]]
        if doc["type"] == "purchase":
            purchased[doc["user_id"]].add(doc["item_id"])
        ids = [i for i, _ in rec.items]
        assert len(ids) == K, rec
        assert len(set(ids)) == K
        assert not set(ids) & purchased[doc["user_id"]], f"purchased item recommended: {rec}"
        assert GONE not in ids
        assert rec.user_id == doc["user_id"] and rec.latency_ms
    # the search for running shoes ranks running shoes first; the unknown-item user gets the fallback
    (first,) = by_event["u1-0"]
    assert first.items[0][0].startswith("shoe-") and not first.fallback
    (u4,) = by_event["u4-0"]
    assert u4.fallback and len(u4.items) == K

    dlq = await consume(kafka.bootstrap, topics["dead_letter_topic"], want=len(BAD) + 1)
    infos = [(r.key, r.value, parse_dead_letter_headers(r.headers)) for r in dlq]
    events_dlq = [(k, v, i) for k, v, i in infos if i.source_topic == topics["events_topic"]]
    assert sorted(i.reason.value for _, _, i in events_dlq) == sorted(reason for _, _, reason in BAD)
    for key, value, info in events_dlq:  # the original bytes are kept
        assert (key, value) in [b[:2] for b in BAD if b[2] == info.reason.value]
    assert [i.reason.value for _, _, i in infos if i.source_topic == topics["items_topic"]] == ["invalid_value"]

    m = worker.metrics()
    assert m["streamrec_pipeline_recommendations_total"] == len(good)
    dead = sum(
        v
        for k, v in m.items()
        if k.startswith("streamrec_pipeline_dead_letters_total{") and f'source="{topics["events_topic"]}"' in k
    )
    assert dead == len(BAD)

    # catalogue changes while serving: a deleted item disappears, a new item becomes recommendable
    await produce(
        kafka.bootstrap,
        topics["items_topic"],
        [
            (b"coffee-1", None),
            (
                b"coffee-9",
                json.dumps({"item_id": "coffee-9", "title": "Espresso coffee beans, extra dark roast"}).encode(),
            ),
        ],
    )
    worker.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE) - 1, what="catalogue update")
    await asyncio.sleep(0.5)
    await produce(kafka.bootstrap, topics["events_topic"], [_event("u9", "search", 0, query="espresso coffee beans")])
    recs_raw = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(good) + 1)
    (latest,) = [decode_recommendation(r.value) for r in recs_raw if decode_recommendation(r.value).user_id == "u9"]
    ids = [i for i, _ in latest.items]
    assert "coffee-1" not in ids
    assert "coffee-9" in ids[:2]
    assert worker.stop() == 0


def _changelog_states(records: list[Any]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.value is not None:
            last[r.key.decode()] = json.loads(r.value)
    return last


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    env = _worker_env(kafka, exported_model, tmp_path / "w", **topics)
    env["STREAMREC_WORKER_NAME"] = "w1"
    await produce(
        kafka.bootstrap,
        topics["items_topic"],
        [(k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()],
    )
    worker = start_worker(env, tmp_path / "worker1.log")
    workers.append(worker)
    worker.wait_ready()
    users = [f"user{u}" for u in range(12)]
    item_ids = sorted(CATALOGUE)
    events = [_event(users[i % len(users)], "click", i, item_id=item_ids[(i * 7) % len(item_ids)]) for i in range(600)]
    producer = asyncio.create_task(_produce_paced(kafka.bootstrap, topics["events_topic"], events, per_s=150))
    # (in a thread: the producer task needs this loop)
    await asyncio.to_thread(
        worker.wait_until, lambda m: m.get("streamrec_pipeline_recommendations_total", 0) >= 120, 120, "progress"
    )
    worker.kill()  # SIGKILL: no flush, no commit, no snapshot
    killed_at = worker.metrics()  # empty: it is gone
    assert killed_at == {}
    await producer
    restarted = start_worker(env, tmp_path / "worker2.log")
    workers.append(restarted)
    restarted.wait_ready()

    recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(events), timeout_s=120)
    got = {decode_recommendation(r.value).event_id for r in recs}
    want = {json.loads(v)["event_id"] for _, v in events}
    assert want <= got, f"{len(want - got)} events without a recommendation"
    assert restarted.stop() == 0
    # Session state survived: each user's final state counts each of its events once (re-deliveries
    # after the crash are recognised by event id and not applied twice).
    changelog = await consume(kafka.bootstrap, f"{topics['app_id']}-sessions-changelog", want=len(users))
    states = _changelog_states(changelog)
    per_user = defaultdict(int)
    for key, _ in events:
        per_user[key.decode()] += 1
    assert {u: states[u]["n_events"] for u in users} == per_user


async def _produce_paced(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], per_s: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for i, (key, value) in enumerate(records):
            await asyncio.sleep(max(0.0, t0 + i / per_s - loop.time()))
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def test_two_workers_share_the_events_partitions(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    env = _worker_env(kafka, exported_model, tmp_path / "w", **topics)
    env["STREAMREC_PARTITIONS"] = "4"
    await produce(
        kafka.bootstrap,
        topics["items_topic"],
        [(k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()],
    )
    for name in ("a", "b"):
        w = start_worker({**env, "STREAMREC_WORKER_NAME": name}, tmp_path / f"worker-{name}.log")
        workers.append(w)
    for w in workers:
        w.wait_ready()
    for w in workers:  # the group has settled: each worker owns some of the 4 partitions
        w.wait_until(lambda m: 1 <= m.get("streamrec_kafka_assigned_partitions", 0) <= 3, what="assignment")
    item_ids = sorted(CATALOGUE)
    events = [_event(f"user{i % 40}", "view", i, item_id=item_ids[i % len(item_ids)]) for i in range(400)]
    await produce(kafka.bootstrap, topics["events_topic"], events)
    recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(events), timeout_s=120)
    assert {decode_recommendation(r.value).event_id for r in recs} == {json.loads(v)["event_id"] for _, v in events}
    served = [w.metrics().get("streamrec_pipeline_recommendations_total", 0.0) for w in workers]
    assert all(n > 0 for n in served), f"both workers must serve a share: {served}"
    assert sum(served) >= len(events)


async def test_users_whose_partitions_move_between_workers_keep_every_event_in_their_state(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    """Worker a serves every partition, b joins (some of a's users move to b), b leaves (they come back to a).
    Each worker keeps the decoded states it wrote last (its state cache): a must not serve the users b served
    in between from the states it had before b joined, so the cache is cleared on every rebalance."""
    env = _worker_env(kafka, exported_model, tmp_path / "w", **topics)
    env["STREAMREC_PARTITIONS"] = "4"
    env["STREAMREC_STATE_CACHE_USERS"] = "10000"  # off by default
    await produce(
        kafka.bootstrap,
        topics["items_topic"],
        [(k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()],
    )
    users, item_ids = [f"user{u}" for u in range(40)], sorted(CATALOGUE)
    sent: list[tuple[bytes, bytes]] = []

    async def round_of_events(n: int) -> None:
        batch = [
            _event(users[i % len(users)], "view", len(sent) + i, item_id=item_ids[(len(sent) + i) % len(item_ids)])
            for i in range(n)
        ]
        sent.extend(batch)
        await produce(kafka.bootstrap, topics["events_topic"], batch)
        recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(sent), timeout_s=120)
        assert {decode_recommendation(r.value).event_id for r in recs} >= {json.loads(v)["event_id"] for _, v in sent}

    a = start_worker({**env, "STREAMREC_WORKER_NAME": "a"}, tmp_path / "worker-a.log")
    workers.append(a)
    a.wait_ready()
    await round_of_events(400)
    b = start_worker({**env, "STREAMREC_WORKER_NAME": "b"}, tmp_path / "worker-b.log")
    workers.append(b)
    b.wait_ready()
    for w in (a, b):
        w.wait_until(lambda m: 1 <= m.get("streamrec_kafka_assigned_partitions", 0) <= 3, what="a shared assignment")
    await round_of_events(400)
    assert b.metrics().get("streamrec_pipeline_recommendations_total", 0.0) > 0, "b served none of a's users"
    assert b.stop() == 0
    a.wait_until(lambda m: m.get("streamrec_kafka_assigned_partitions", 0) == 4, what="a serving every partition")
    await round_of_events(400)
    # (else the cache served nothing, and this test could not show a stale read)
    a.wait_until(lambda m: m.get('streamrec_session_state_cache_lookups_total{result="hit"}', 0) > 0, what="hits")
    assert a.stop() == 0
    changelog = await consume(kafka.bootstrap, f"{topics['app_id']}-sessions-changelog", want=len(users))
    states = _changelog_states(changelog)
    per_user: defaultdict[str, int] = defaultdict(int)
    last_item: dict[str, str] = {}
    for key, value in sent:
        per_user[key.decode()] += 1
        last_item[key.decode()] = json.loads(value)["item_id"]
    assert {u: states[u]["n_events"] for u in users} == per_user
    assert {u: states[u]["recent_items"][0] for u in users} == last_item
