"""Issue 15's table on the real broker: each poison record among valid events, against a running worker with
one events partition. The worker keeps answering, the dead-letter topic holds each record with its reason,
its health stays green, and SIGTERM stops it."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamrec.streams.deadletter import KEEP_VALUE_BYTES, parse_dead_letter_headers
from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import (
    KafkaForTests,
    WorkerProcess,
    consume,
    produce,
    start_worker,
    worker_environment,
    worker_topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOGUE = {
    f"sku-{i}": t
    for i, t in enumerate(
        [
            "Red running shoes",
            "Trail running shoes",
            "Espresso coffee beans",
            "Ceramic teapot with infuser",
            "Green tea leaves",
            "Two-person tent",
            "Down sleeping bag",
            "Yoga mat",
            "Science fiction novel",
            "USB-C charger",
        ]
    )
}
NOW_MS = int(time.time() * 1000)
DEEP = b"[" * 10_000 + b"]" * 10_000

# (key, value, expected dead-letter reason)
BAD_ITEMS: list[tuple[bytes, bytes, str]] = [
    (b"i1", b'{"item_id": "i1", "title": "Teapot \\ud800"}', "invalid_value"),
    (b"i2", b'{"item_id": "i2", "title": "Deep", "tags": ' + DEEP + b"}", "invalid_json"),
    (b"i3", json.dumps({"item_id": "i3", "title": "x" * 999_000}).encode(), "oversized"),
]
BAD_EVENTS: list[tuple[bytes | None, bytes, str]] = [
    (b"u1", DEEP, "invalid_json"),
    (None, b'{"user_id": "u\\udc00", "type": "view", "item_id": "sku-1"}', "invalid_value"),
    (
        "u\udc00".encode("utf-8", "surrogatepass"),
        b'{"user_id": "u\\udc00", "type": "view", "item_id": "sku-1"}',
        "undecodable",
    ),
    (b"u1", b'{"user_id": "u1", "type": "view", "item_id": "x\\udc00"}', "invalid_value"),
    (b"u1", b'{"user_id": "u1", "type": "search", "query": "tea \\ud800"}', "invalid_value"),
    (b"u1", b'{"user_id": "u1", "type": "view", "item_id": "new-1", "title": "Mug \\udfff"}', "invalid_value"),
    (b"u1", json.dumps({"user_id": "u1", "type": "search", "query": "q" * 1_000_000}).encode(), "oversized"),
    (b"\xff\xfeu1", b'{"user_id": "u1", "type": "view", "item_id": "sku-2"}', "undecodable"),
]


def _event(user: str, n: int, **fields: Any) -> tuple[bytes, bytes]:
    doc = {"user_id": user, "type": "view", "item_id": f"sku-{n % 10}", "event_id": f"{user}-{n}", **fields}
    return user.encode(), json.dumps(doc).encode()


# Valid events the worker must answer, among them the future timestamps (clamped) and, right after them,
# events that need the popularity fallback (an item the catalogue does not know).
FUTURE = [
    _event("f1", 0, ts=NOW_MS + 30 * 86_400_000),
    _event("f1", 1, ts=4_102_444_800_000),
    _event("f2", 2, ts="2100-01-01T00:00:00Z"),
    _event("f3", 3, item_id="not-in-catalogue"),
    _event("f1", 4, item_id="not-in-catalogue-either"),
]


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_every_poison_record_is_dead_lettered_and_the_worker_goes_on(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path
) -> None:
    topics = worker_topics()
    env = worker_environment(
        kafka.bootstrap,
        exported_model,
        tmp_path / "w",
        topics,
        k="5",
        partitions="1",
        items_partitions="1",
        shutdown_timeout_s="20",
    )
    worker: WorkerProcess = start_worker(env, tmp_path / "worker.log")
    try:
        worker.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
        items: list[tuple[bytes | None, bytes | None]] = [
            (k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()
        ]
        for i, bad in enumerate(BAD_ITEMS):  # poison items among valid ones
            items.insert(2 + 3 * i, bad[:2])
        await produce(kafka.bootstrap, topics["items_topic"], items)
        worker.wait_until(lambda m: m.get("streamrec_index_items") == len(CATALOGUE), what="catalogue")
        worker.wait_ready()

        good = [_event(f"user{i % 4}", i) for i in range(24)]
        mixed: list[tuple[bytes | None, bytes | None]] = []
        for i, record in enumerate(good):
            mixed.append(record)
            if i < len(BAD_EVENTS):
                mixed.append(BAD_EVENTS[i][:2])
            if i == 12:
                mixed.extend(FUTURE)
        await produce(kafka.bootstrap, topics["events_topic"], mixed)
        answered_ids = {json.loads(v)["event_id"] for _, v in good + FUTURE}

        recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(answered_ids), timeout_s=90)
        by_id = {decode_recommendation(r.value).event_id: decode_recommendation(r.value) for r in recs}
        assert set(by_id) == answered_ids and len(recs) == len(answered_ids)
        for event_id in ("f1-0", "f1-1", "f2-2"):  # clamped to the worker's clock, not refused
            assert abs(by_id[event_id].event_ts - NOW_MS) < 600_000, by_id[event_id]
        assert by_id["f3-3"].fallback and len(by_id["f3-3"].items) == 5  # the fallback after them still works

        dlq = await consume(
            kafka.bootstrap, topics["dead_letter_topic"], want=len(BAD_EVENTS) + len(BAD_ITEMS), timeout_s=60
        )
        got: dict[str, list[tuple[bytes | None, bytes | None, Any]]] = {}
        for r in dlq:
            info = parse_dead_letter_headers(r.headers)
            got.setdefault(info.source_topic, []).append((r.key, r.value, info))
        for source, bad in ((topics["events_topic"], BAD_EVENTS), (topics["items_topic"], BAD_ITEMS)):
            assert len(got[source]) == len(bad), [(i.reason, i.detail) for _, _, i in got[source]]
            for (key, value, info), (want_key, want_value, reason) in zip(got[source], bad, strict=True):
                assert info.reason.value == reason, (want_value[:80], info.detail)
                assert key == want_key
                if len(want_value) > 900_000:  # too large to copy: truncated, with size and hash
                    assert info.truncated == ("value",) and value == want_value[:KEEP_VALUE_BYTES]
                    assert info.original_bytes["value"] == len(want_value)
                    assert info.original_sha256["value"] == hashlib.sha256(want_value).hexdigest()
                else:
                    assert value == want_value and info.truncated == ()

        m = worker.metrics()
        assert m["streamrec_worker_healthy"] == 1.0 and m["streamrec_index_ready"] == 1.0
        assert m["streamrec_pipeline_recommendations_total"] == len(answered_ids)
        assert m["streamrec_pipeline_clamped_timestamps_total"] == 3
        source = topics["events_topic"]
        assert m.get(f'streamrec_pipeline_dead_letters_total{{reason="processing_error",source="{source}"}}') == 0
        base = worker.metrics_url.rsplit("/", 1)[0]
        assert _http_status(base + "/healthz") == 200 and _http_status(base + "/readyz") == 200

        # still answering after all of it
        await produce(kafka.bootstrap, topics["events_topic"], [_event("late", 99, item_id="sku-3")])
        recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=len(answered_ids) + 1)
        assert "late-99" in {decode_recommendation(r.value).event_id for r in recs}
    finally:
        t0 = time.monotonic()
        rc = worker.stop(timeout_s=60)
        stopped_s = time.monotonic() - t0
    assert rc == 0, worker.log_tail()
    assert stopped_s < 25, f"SIGTERM took {stopped_s:.1f} s"
