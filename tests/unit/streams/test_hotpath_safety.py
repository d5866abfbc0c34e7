"""The batch step (HotPath.process) never lets one record stop the stream: generated batches of valid and
hostile records are each answered or dead-lettered, exactly once, and every event is acked; an unexpected
exception is isolated to its record (processing_error) by re-running the batch event by event."""

from __future__ import annotations

import asyncio
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiokafka.errors import KafkaTimeoutError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamrec.index import ExactIndex
from streamrec.streams.core import CoreConfig, RecommenderCore
from streamrec.streams.deadletter import parse_dead_letter_headers
from streamrec.streams.hotpath import HotPath, ProcessingHalted
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import DeadLetterReason, decode_recommendation
from streamrec.streams.session import make_strategy

DIM = 8
NOW_S = 1_764_000_000.0
ITEMS = [f"item-{i}" for i in range(30)]


def _vec(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEncoder:
    """Deterministic vectors; like the real tokenizer it fails on text that is not valid Unicode."""

    dim = DIM

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison

    def encode(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self.poison is not None and self.poison in texts:
            raise RuntimeError(f"encoder cannot take {self.poison!r}")
        return np.stack([_vec(t) for t in texts]) if texts else np.empty((0, DIM), np.float32)


class FakeOutput:
    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.fail_with = fail_with

    async def send(self, key: bytes | None, value: bytes | None, headers: Any = None) -> asyncio.Future[Any]:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((key, value, list(headers or [])))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeEvent:
    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.message = SimpleNamespace(
            topic="events", partition=0, offset=offset, key=key, value=value, timestamp=NOW_S - 1, time_in=None
        )
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1


def make_hotpath(
    pool: ThreadPoolExecutor,
    *,
    encoder: FakeEncoder | None = None,
    recs: FakeOutput | None = None,
    max_consecutive_errors: int = 100,
) -> tuple[HotPath, FakeOutput, FakeOutput, WorkerMetrics]:
    index = ExactIndex(DIM)
    index.upsert(ITEMS, np.stack([_vec(i) for i in ITEMS]))
    recs = recs or FakeOutput()
    dlq = FakeOutput()
    metrics = WorkerMetrics(CollectorRegistry())
    core = RecommenderCore(
        encoder=encoder or FakeEncoder(),
        index=index,
        titles={i: f"title of {i}" for i in ITEMS},
        strategy=make_strategy("decayed_mean"),
        popularity=RecentPopularity(half_life_s=300),
        config=CoreConfig(k=5),
    )
    hp = HotPath(
        table={},
        recommendations=recs,  # type: ignore[arg-type]
        dead_letter=dlq,  # type: ignore[arg-type]
        core=core,
        metrics=metrics,
        pool=pool,
        model_name="m",
        worker_name="w",
        clock=lambda: NOW_S,
        max_consecutive_errors=max_consecutive_errors,
    )
    return hp, recs, dlq, metrics


def valid(user: str, n: int, **fields: Any) -> tuple[bytes, bytes]:
    doc = {"user_id": user, "type": "view", "item_id": ITEMS[n % len(ITEMS)], "event_id": f"{user}-{n}", **fields}
    return user.encode(), json.dumps(doc).encode()


async def run_batch(hp: HotPath, records: list[tuple[bytes | None, bytes | None]]) -> list[FakeEvent]:
    events = [FakeEvent(i, k, v) for i, (k, v) in enumerate(records)]
    await hp.process(events)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # ack callbacks
    return events


def reasons(dlq: FakeOutput) -> list[str]:
    return [parse_dead_letter_headers(h).reason.value for _, _, h in dlq.sent]


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(1) as p:
        yield p


async def test_an_unexpected_exception_is_isolated_to_its_record(pool: ThreadPoolExecutor) -> None:
    hp, recs, dlq, metrics = make_hotpath(pool, encoder=FakeEncoder(poison="boom"))
    records: list[tuple[bytes | None, bytes | None]] = [valid("u1", 0), valid("u2", 1)]
    poison = {"user_id": "u3", "type": "search", "query": "boom", "event_id": "bad"}
    records.append((b"u3", json.dumps(poison).encode()))
    records += [valid("u1", 2), valid("u4", 3)]
    events = await run_batch(hp, records)
    assert all(e.acks == 1 for e in events)
    assert sorted(decode_recommendation(v or b"").event_id for _, v, _ in recs.sent) == ["u1-0", "u1-2", "u2-1", "u4-3"]
    ((key, value, headers),) = dlq.sent
    info = parse_dead_letter_headers(headers)
    assert (key, value) == records[2] and info.reason is DeadLetterReason.PROCESSING_ERROR
    assert "RuntimeError" in info.detail and "boom" in info.detail
    assert metrics.isolated_batches._value.get() == 1
    assert metrics.dead_letters.labels("events", "processing_error")._value.get() == 1
    # the stream goes on: the next batch is served normally
    events = await run_batch(hp, [valid("u5", 4)])
    assert events[0].acks == 1 and len(recs.sent) == 5


async def test_a_systemic_fault_stops_the_worker_instead_of_dead_lettering_everything(
    pool: ThreadPoolExecutor,
) -> None:
    hp, recs, dlq, _ = make_hotpath(pool, encoder=FakeEncoder(poison="q"), max_consecutive_errors=3)
    search = [(b"u", json.dumps({"user_id": "u", "type": "search", "query": "q"}).encode())] * 6
    with pytest.raises(ProcessingHalted, match="4 events in a row"):
        await run_batch(hp, search)  # type: ignore[arg-type]
    assert len(dlq.sent) == 3 and not recs.sent


async def test_kafka_errors_are_not_the_records_fault(pool: ThreadPoolExecutor) -> None:
    hp, _, dlq, _ = make_hotpath(pool, recs=FakeOutput(fail_with=KafkaTimeoutError()))
    with pytest.raises(KafkaTimeoutError):
        await run_batch(hp, [valid("u1", 0), valid("u2", 1)])
    assert not dlq.sent


async def test_far_future_timestamps_are_answered_and_counted(pool: ThreadPoolExecutor) -> None:
    hp, recs, dlq, metrics = make_hotpath(pool)
    future = [
        valid("u1", 0, ts=int(NOW_S * 1000) + 30 * 86_400_000),
        valid("u1", 1, ts=4_102_444_800_000),
        valid("u2", 2, item_id="unknown", ts=4_102_444_800_000),
    ]  # u2: the popularity fallback
    events = await run_batch(hp, future)  # type: ignore[arg-type]
    await run_batch(hp, [valid("u3", 3, item_id="unknown")])  # the fallback after the far-future events
    assert all(e.acks == 1 for e in events) and not dlq.sent and len(recs.sent) == 4
    assert {decode_recommendation(v or b"").event_ts for _, v, _ in recs.sent[:3]} == {int(NOW_S * 1000)}
    assert metrics.clamped_timestamps._value.get() == 3


# --- generated batches ------------------------------------------------------------------------------------

_text = st.text(max_size=30) | st.sampled_from(["\ud800", "a\udc00", "", " ", "x" * 3000])
_ts = (
    st.none()
    | st.integers(min_value=-(10**15), max_value=10**16)
    | st.floats()
    | st.sampled_from(["2100-01-01T00:00:00Z", "1970-01-01", "not a date", 4_102_444_800_000])
)
_event_doc = st.fixed_dictionaries(
    {
        "user_id": st.sampled_from(["u1", "u2", "u3"]) | _text,
        "type": st.sampled_from(["view", "click", "add_to_cart", "purchase", "search"]) | _text,
    },
    optional={
        "item_id": st.sampled_from([*ITEMS[:5], "unknown-item"]) | _text,
        "query": _text,
        "title": _text,
        "ts": _ts,
        "event_id": _text,
    },
)


def _record(doc: dict[str, Any], keyed: bool) -> tuple[bytes | None, bytes]:
    user = doc.get("user_id")
    key = user.encode("utf-8", "surrogatepass") if keyed and isinstance(user, str) else None
    return key, json.dumps(doc).encode()


_records = st.lists(
    st.builds(_record, _event_doc, st.booleans())
    | st.tuples(st.none() | st.binary(max_size=6), st.binary(max_size=40) | st.none())
    | st.integers(min_value=30, max_value=5_000).map(lambda d: (b"u1", b"[" * d + b"]" * d)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_records, min_size=1, max_size=3))
def test_generated_batches_every_record_is_answered_or_dead_lettered_once(batches: list[Any]) -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            hp, recs, dlq, metrics = make_hotpath(pool)
            for batch in batches:
                before = len(recs.sent) + len(dlq.sent)
                events = await run_batch(hp, batch)
                assert len(recs.sent) + len(dlq.sent) - before == len(batch)
                assert all(e.acks == 1 for e in events)
            for _, value, _ in recs.sent:
                decode_recommendation(value or b"")
            assert "processing_error" not in reasons(dlq), "a generated record hit an unexpected exception"
            assert metrics.isolated_batches._value.get() == 0

    asyncio.run(main())
