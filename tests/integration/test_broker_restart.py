"""The broker goes away under a running worker and comes back: the worker stays up (no crash, no zombie), loses
nothing, and answers again. Runs its own broker (own ports and home): the shared one must never be stopped."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from streamrec.localkafka import LocalKafka, LocalKafkaConfig
from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import consume, produce, start_worker, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 10.0


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        if port < 65000:
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def _events(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"u{i % 5}".encode(),
            json.dumps(
                {"user_id": f"u{i % 5}", "type": "view", "item_id": f"sku-{i % 8}", "event_id": f"{prefix}-{i}"}
            ).encode(),
        )
        for i in range(n)
    ]


async def test_the_worker_survives_a_broker_restart_and_loses_nothing(exported_model: Path, tmp_path: Path) -> None:
    port = _free_port_pair()
    broker = LocalKafka(LocalKafkaConfig(port=port, home=tmp_path / "kafka"))
    broker.up()
    bootstrap = broker.config.bootstrap
    topics = {
        "app_id": unique_name("app"),
        "events_topic": "events",
        "items_topic": "items",
        "recommendations_topic": "recs",
        "dead_letter_topic": "dlq",
    }
    env = {
        "STREAMREC_BOOTSTRAP": bootstrap,
        "STREAMREC_MODEL_DIR": str(exported_model),
        "STREAMREC_DATA_DIR": str(tmp_path / "w"),
        "STREAMREC_K": "3",
        "STREAMREC_PARTITIONS": "2",
        **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
    }
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        worker.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
        await produce(
            bootstrap,
            "items",
            [
                (f"sku-{i}".encode(), json.dumps({"item_id": f"sku-{i}", "title": f"product number {i}"}).encode())
                for i in range(8)
            ],
        )
        worker.wait_ready()
        before = _events("before", 60)
        await produce(bootstrap, "events", before)
        assert len(await consume(bootstrap, "recs", want=len(before), timeout_s=60)) >= len(before)

        broker.down()
        await asyncio.sleep(OUTAGE_S)
        assert worker.proc.poll() is None, "the worker died while the broker was away:\n" + worker.log_tail()
        broker.up()
        t_up = time.monotonic()
        after = _events("after", 60)
        await produce(bootstrap, "events", after)
        recs = await consume(bootstrap, "recs", want=len(before) + len(after), timeout_s=120)
        resumed_s = time.monotonic() - t_up
        got = {decode_recommendation(r.value).event_id for r in recs}
        want = {json.loads(v)["event_id"] for _, v in before + after}
        assert want <= got, f"{len(want - got)} events lost"
        m = worker.metrics()
        assert m["streamrec_worker_healthy"] == 1.0
        print(f"answered everything {resumed_s:.1f} s after the broker's return")  # shown with -s
    finally:
        rc = worker.stop(timeout_s=60)
        broker.down()
    assert rc == 0, worker.log_tail()
