"""A corrupted index snapshot on the real broker: refused with a clear log line, rebuilt from the items topic,
and no catalogue item goes missing (issue 15: a flipped resume offset in the metadata used to be accepted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import (
    KafkaForTests,
    consume,
    produce,
    start_worker,
    worker_environment,
    worker_topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TITLES = [
    "Red running shoes",
    "Espresso coffee beans",
    "Ceramic teapot",
    "Two-person tent",
    "Yoga mat",
    "Sleeping bag",
    "Science fiction novel",
    "USB-C charger",
    "Green tea",
    "Leather office shoes",
]


@pytest.mark.parametrize("corruption", ["offset_in_metadata", "graph_bit"])
async def test_a_corrupt_snapshot_is_refused_and_rebuilt(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, corruption: str
) -> None:
    topics = worker_topics()
    env = worker_environment(
        kafka.bootstrap,
        exported_model,
        tmp_path / "w",
        topics,
        worker_name="w1",
        k="3",
        partitions="1",
        items_partitions="1",
    )
    items = [
        (f"sku-{i}".encode(), json.dumps({"item_id": f"sku-{i}", "title": t}).encode()) for i, t in enumerate(TITLES)
    ]
    worker = start_worker(env, tmp_path / "worker1.log")
    try:
        worker.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
        await produce(kafka.bootstrap, topics["items_topic"], items)
        worker.wait_until(lambda m: m.get("streamrec_index_items") == len(TITLES), what="catalogue")
    finally:
        assert worker.stop() == 0  # graceful: saves the snapshot

    root = tmp_path / "w" / "w1" / "index"
    snap = root / (root / "CURRENT").read_text().strip()
    if corruption == "offset_in_metadata":  # the case: one digit of a resume offset flipped
        meta = (snap / "meta.json").read_text()
        offsets = re.search(r'"offsets":\{"0":(\d+)\}', meta)
        assert offsets is not None and int(offsets.group(1)) == len(TITLES)
        (snap / "meta.json").write_text(meta.replace('"offsets":{"0":10}', '"offsets":{"0":11}'))
    else:
        graph = max(snap.iterdir(), key=lambda p: p.stat().st_size)
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0x01
        graph.write_bytes(bytes(data))

    worker = start_worker(env, tmp_path / "worker2.log")
    try:
        worker.wait_ready()
        worker.wait_until(lambda m: m.get("streamrec_index_items") == len(TITLES), what="rebuilt catalogue")
        log = (tmp_path / "worker2.log").read_text()
        assert "not usable" in log and "rebuilding from the items topic" in log, worker.log_tail()
        assert "checksum mismatch" in log
        search = json.dumps({"user_id": "u1", "type": "search", "query": "running shoes", "event_id": "s1"})
        await produce(kafka.bootstrap, topics["events_topic"], [(b"u1", search.encode())])
        (rec,) = [
            decode_recommendation(r.value)
            for r in await consume(kafka.bootstrap, topics["recommendations_topic"], want=1)
        ]
        assert rec.items[0][0] in ("sku-0", "sku-9")  # the shoes: the first item is back in the index
    finally:
        assert worker.stop() == 0
