"""The catalogue replica's snapshot on the real broker: a worker stopped gracefully snapshots its index, and
the next start resumes from it (no re-encoding, only what arrived since); the index kind is a setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import KafkaForTests, WorkerProcess, consume, produce, start_worker, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOGUE = {
    f"item-{i}": title
    for i, title in enumerate(
        [
            "Red running shoes",
            "Trail running shoes",
            "Espresso coffee beans",
            "Burr coffee grinder",
            "Two-person tent",
            "Down sleeping bag",
            "Cookbook of pasta recipes",
            "Science fiction novel",
            "Green tea leaves",
            "Non-slip yoga mat",
            "Wireless earbuds",
            "USB-C charger",
        ]
    )
}
UPSERTS = 'streamrec_index_updates_total{op="upsert"}'


def _env(kafka: KafkaForTests, model: Path, data: Path, topics: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        "STREAMREC_MODEL_DIR": str(model),
        "STREAMREC_DATA_DIR": str(data),
        "STREAMREC_WORKER_NAME": "w1",
        "STREAMREC_K": "3",
        "STREAMREC_PARTITIONS": "1",
        "STREAMREC_SNAPSHOT_INTERVAL_S": "3600",  # only the shutdown snapshot
        **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
        **extra,
    }


def _item(item_id: str, title: str) -> tuple[bytes, bytes]:
    return item_id.encode(), json.dumps({"item_id": item_id, "title": title}).encode()


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


async def test_restart_resumes_from_the_shutdown_snapshot(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    env = _env(kafka, exported_model, tmp_path / "data", topics)
    await produce(kafka.bootstrap, topics["items_topic"], [_item(k, t) for k, t in CATALOGUE.items()])
    first = start_worker(env, tmp_path / "worker1.log")
    workers.append(first)
    first.wait_ready()
    m = first.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE), what="catalogue")
    assert m[UPSERTS] == len(CATALOGUE)
    assert first.stop() == 0
    assert "index snapshot saved" in (tmp_path / "worker1.log").read_text()

    await produce(kafka.bootstrap, topics["items_topic"], [_item("item-new", "Ceramic teapot with infuser")])
    second = start_worker(env, tmp_path / "worker2.log")
    workers.append(second)
    second.wait_ready()
    m = second.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE) + 1, what="the new item")
    assert m[UPSERTS] == 1, "only the item that arrived after the snapshot is encoded again"
    log = (tmp_path / "worker2.log").read_text()
    assert f"index snapshot loaded: {len(CATALOGUE)} items" in log
    # the restored titles serve events: a view of a restored item recommends its neighbours, not a fallback
    await produce(
        kafka.bootstrap,
        topics["events_topic"],
        [
            (b"u1", json.dumps({"user_id": "u1", "type": "view", "item_id": "item-2", "event_id": "e1"}).encode()),
        ],
    )
    (rec,) = [
        decode_recommendation(r.value) for r in await consume(kafka.bootstrap, topics["recommendations_topic"], want=1)
    ]
    assert not rec.fallback and "item-3" in [i for i, _ in rec.items]  # coffee beans -> coffee grinder
    assert second.stop() == 0


async def test_the_exact_index_kind_serves_the_same_pipeline(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str], workers: list[WorkerProcess]
) -> None:
    env = _env(kafka, exported_model, tmp_path / "data", topics, STREAMREC_INDEX_KIND="exact")
    await produce(kafka.bootstrap, topics["items_topic"], [_item(k, t) for k, t in CATALOGUE.items()])
    worker = start_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    worker.wait_ready()
    worker.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE), what="catalogue")
    await produce(
        kafka.bootstrap,
        topics["events_topic"],
        [
            (
                b"u1",
                json.dumps({"user_id": "u1", "type": "search", "query": "running shoes", "event_id": "e1"}).encode(),
            ),
        ],
    )
    (rec,) = [
        decode_recommendation(r.value) for r in await consume(kafka.bootstrap, topics["recommendations_topic"], want=1)
    ]
    assert not rec.fallback and {i for i, _ in rec.items[:2]} == {"item-0", "item-1"}
    assert worker.stop() == 0
    assert "index snapshot saved" in (tmp_path / "worker.log").read_text()
