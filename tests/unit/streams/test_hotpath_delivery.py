"""The hot path acks an event only when Kafka acknowledged ALL the output it caused (its recommendation or dead
letter, and the batch's co-visitation deltas), and stops after a failed delivery -- driven through
``HotPath.process``, as the worker's batcher drives it, with a producer whose acknowledgements the test controls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamrec.index import ExactIndex
from streamrec.streams.core import RecommenderCore
from streamrec.streams.covisit import CovisitDelta, CovisitGraph
from streamrec.streams.covisit_sync import CovisitPublisher, decode_deltas
from streamrec.streams.hotpath import DeliveryFailed, HotPath, Output
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import decode_recommendation
from streamrec.streams.session import SessionState, make_strategy
from streamrec.streams.state_cache import StateCache

D = 4


class Producer:
    """Records what was sent; each send returns a future the test resolves (the broker's acknowledgement)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, asyncio.Future[Any]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, **kw: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, kw.get("partition"), fut))
        return fut

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, int | None, asyncio.Future[Any]]]:
        return [s for s in self.sent if s[0] == topic]


class App:
    def __init__(self) -> None:
        self.producer = Producer()
        self.started = 0

    async def maybe_start_producer(self) -> None:
        self.started += 1


class Message:
    def __init__(self, offset: int, value: bytes, key: bytes) -> None:
        self.topic, self.partition, self.offset = "events", 0, offset
        self.value, self.key, self.timestamp = value, key, 1_700_000_000.0


class FaustEvent:
    def __init__(self, offset: int, value: bytes, key: bytes = b"u1") -> None:
        self.message = Message(offset, value, key)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class Encoder:
    dim = D
    name = "unused"

    def encode(self, texts: Any) -> Any:
        raise AssertionError("every item is in the index: nothing to encode")


def event(offset: int, item: str, user: str = "u1") -> FaustEvent:
    doc = {"user_id": user, "type": "view", "item_id": item, "ts": 1_700_000_000_000 + offset}
    return FaustEvent(offset, json.dumps(doc).encode(), user.encode())


async def settle() -> None:
    """Let the done-callbacks run (a delivery reaches an event's ack through up to three of them)."""
    for _ in range(4):
        await asyncio.sleep(0)


def hotpath(app: App, table: dict[bytes, bytes], delta_interval_s: float = 0.0) -> HotPath:
    index = ExactIndex(D)
    index.upsert([f"i{n}" for n in range(8)], np.eye(D, dtype=np.float32)[[n % D for n in range(8)]])
    core = RecommenderCore(
        encoder=Encoder(),
        index=index,
        titles={},
        strategy=make_strategy("decayed_mean"),
        popularity=RecentPopularity(),
        covisit=CovisitGraph(),
    )
    return HotPath(
        table=table,
        recommendations=Output(app, "recs"),
        dead_letter=Output(app, "dlq"),
        core=core,
        metrics=WorkerMetrics(CollectorRegistry()),
        pool=None,  # type: ignore[arg-type]  # the default executor
        model_name="m",
        worker_name="w",
        covisit_out=CovisitPublisher(Output(app, "deltas"), partitions=2, interval_s=delta_interval_s),
    )


async def test_an_event_is_acked_once_its_recommendation_and_the_batch_deltas_are_delivered() -> None:
    app, table = App(), {}
    hp = hotpath(app, table)
    first, second, bad = event(1, "i1"), event(2, "i2"), FaustEvent(3, b"not json")
    await hp.process([first, second, bad])
    p = app.producer
    recs, deltas, dlq = p.to("recs"), p.to("deltas"), p.to("dlq")
    assert [decode_recommendation(v).event_id for _, _, v, _, _ in recs if v] == ["events:0:1", "events:0:2"]
    assert len(dlq) == 1 and deltas, "one dead letter, and the deltas of the batch"
    learned = {d.item for _, _, v, _, _ in deltas if v for d in decode_deltas(v)}
    assert learned == {"i1", "i2"}  # i2 after i1: the row of i1 (forward) and of i2 (its weight, backward)
    assert SessionState.from_json_bytes(table[b"u1"]).recent_items == ("i2", "i1")
    await settle()
    assert not (first.acked or second.acked or bad.acked)  # handed to the producer is not enough

    recs[0][4].set_result(None)
    dlq[0][4].set_result(None)
    await settle()
    assert bad.acked  # a dead letter is its only output
    assert not first.acked  # its recommendation is out, the deltas it caused are not
    for *_, fut in deltas:
        fut.set_result(None)
    await settle()
    assert first.acked and not second.acked
    recs[1][4].set_result(None)
    await settle()
    assert second.acked


async def test_a_failed_delivery_leaves_the_event_unacked_and_stops_the_next_batch() -> None:
    app = App()
    hp = hotpath(app, {})
    ev = event(1, "i1")
    await hp.process([ev])
    for topic, *_, fut in app.producer.sent:
        if topic == "recs":
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(None)
    await settle()
    assert not ev.acked
    with pytest.raises(DeliveryFailed, match="broker said no"):
        await hp.process([event(2, "i2")])


async def test_the_batch_deltas_are_waited_for_all_together_and_their_failure_fails_every_event() -> None:
    app = App()
    hp = hotpath(app, {})
    evs = [event(1, "i1"), event(2, "i2", "u2"), event(3, "i4"), event(4, "i0", "u2")]  # i4: partition 1
    await hp.process(evs)
    p = app.producer
    deltas = p.to("deltas")
    assert len(deltas) == 2  # one message per owning partition
    for *_, fut in p.to("recs"):
        fut.set_result(None)
    deltas[0][4].set_result(None)
    await settle()
    assert not any(e.acked for e in evs)  # one of the batch's deltas messages is still out
    deltas[1][4].set_exception(RuntimeError("deltas lost"))
    await settle()
    assert not any(e.acked for e in evs)  # every event of the batch caused them: none is acked
    with pytest.raises(DeliveryFailed, match="deltas lost"):
        await hp.process([event(5, "i5")])


async def test_output_appends_to_the_app_producer_without_faust_topic_send() -> None:
    app = App()
    out = Output(app, "recs")
    f1 = await out.send(b"u1", b"v1")
    await out.send(b"u2", b"v2", [("reason", b"x")], partition=1)
    assert [(t, k, v, part) for t, k, v, part, _ in app.producer.sent] == [
        ("recs", b"u1", b"v1", None),
        ("recs", b"u2", b"v2", 1),
    ]
    assert app.started == 1 and not f1.done()  # the caller awaits delivery through the future


async def test_deltas_of_several_batches_are_merged_into_one_flush_that_acks_them_all() -> None:
    app = App()
    hp = hotpath(app, {}, delta_interval_s=0.05)
    assert hp.covisit_out is not None
    a, b, c = event(1, "i1"), event(2, "i2"), event(3, "i1", "u2")
    await hp.process([a])
    await hp.process([b])
    await hp.process([c])
    p = app.producer
    for *_, fut in p.to("recs"):
        fut.set_result(None)
    await settle()
    assert p.to("deltas") == [] and not any(e.acked for e in (a, b, c))  # held for the interval: not acked
    await asyncio.sleep(0.08)
    deltas = p.to("deltas")
    assert len(deltas) == 1 and hp.covisit_out.messages == 1  # i1 and i2 own partition 0: one message
    merged = {d.item: d for d in decode_deltas(deltas[0][2] or b"")}
    assert merged["i1"].n == pytest.approx(2.0)  # u1 then u2 viewed i1: both batches, summed
    assert merged["i1"].pairs == pytest.approx({"i2": 1.0}) and merged["i2"].pairs == pytest.approx({"i1": 0.5})
    assert merged["i1"].nexts == pytest.approx({"i2": 1.0})
    assert not any(e.acked for e in (a, b, c))
    deltas[0][4].set_result(None)
    await settle()
    assert a.acked and b.acked and c.acked


async def test_held_deltas_are_published_on_close_and_a_failed_flush_fails_every_waiting_event() -> None:
    app = App()
    hp = hotpath(app, {}, delta_interval_s=60.0)
    assert hp.covisit_out is not None
    a, b = event(1, "i1"), event(2, "i4", "u2")
    await hp.process([a])
    await hp.process([b])
    for *_, fut in app.producer.to("recs"):
        fut.set_result(None)
    assert app.producer.to("deltas") == []
    await hp.covisit_out.close()  # shutdown: after the hot path drained
    deltas = app.producer.to("deltas")
    assert len(deltas) == 2  # i1 (partition 0) and i4 (partition 1)
    deltas[0][4].set_result(None)
    deltas[1][4].set_exception(RuntimeError("deltas lost"))
    await settle()
    assert not a.acked and not b.acked
    with pytest.raises(DeliveryFailed, match="deltas lost"):
        await hp.process([event(3, "i5")])


async def test_merged_deltas_are_valued_at_one_reference_time() -> None:
    app = App()
    out = CovisitPublisher(Output(app, "deltas"), partitions=1, interval_s=60.0, half_life_s=10.0)
    await out.add([CovisitDelta("x", 100.0, 1.0, {"y": 2.0}, {"y": 1.0})])
    # one half-life later: valued at the first one's time, as the graph values rows (x 2; it decays back)
    await out.add([CovisitDelta("x", 110.0, 1.0, {"y": 2.0, "z": 4.0})])
    await out.flush()
    (d,) = decode_deltas(app.producer.to("deltas")[0][2] or b"")
    assert d.ts_s == 100.0
    assert d.n == pytest.approx(3.0) and d.pairs == pytest.approx({"y": 6.0, "z": 8.0})
    assert d.nexts == pytest.approx({"y": 1.0})


# ---------------------------------------------------------------- the decoded-state cache
class CountingTable(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


async def test_the_hot_path_reads_its_own_last_write_from_the_cache_and_serves_the_same() -> None:
    script = [
        [event(1, "i1"), event(2, "i2", "u2")],
        [event(3, "i3"), event(4, "i5")],
        [event(5, "i4", "u2"), event(6, "i6")],
        [event(7, "i7", "u2"), event(8, "i0")],
    ]
    runs = {}
    for capacity in (0, 100):
        app, table = App(), CountingTable()
        hp = hotpath(app, table)
        hp.state_cache = StateCache(capacity)
        for batch in script:
            # fresh copies: the hot path marks the events it handles
            await hp.process([event(e.message.offset, *_item_user(e)) for e in batch])
        recs = [decode_recommendation(v) for _, _, v, _, _ in app.producer.to("recs") if v]
        runs[capacity] = ([r.items for r in recs], dict(table), table.reads, hp.state_cache)
    (items_off, table_off, reads_off, _), (items_on, table_on, reads_on, cache) = runs[0], runs[100]
    assert items_on == items_off and table_on == table_off  # the same lists and the same durable states
    assert reads_off == 7  # every batch reads each of its users from the table (2 + 1 + 2 + 2)
    assert reads_on == 2  # only the first event of u1 and of u2 (nothing cached yet)
    assert (cache.hits, cache.misses) == (5, 2)


async def test_a_batch_under_way_during_a_rebalance_does_not_fill_the_cache() -> None:
    app, table = App(), CountingTable()
    hp = hotpath(app, table)
    hp.state_cache = cache = StateCache(100)
    step = hp.core.step

    def step_during_a_rebalance(*args: Any) -> Any:
        cache.clear()  # the worker's revocation callback, while the batch is computed
        return step(*args)

    hp.core.step = step_during_a_rebalance  # type: ignore[method-assign]
    await hp.process([event(1, "i1")])
    assert len(cache) == 0 and b"u1" in table  # written to the table, not cached
    hp.core.step = step  # type: ignore[method-assign]
    await hp.process([event(2, "i2")])
    assert table.reads == 2 and len(cache) == 1  # read back from the table, then cached
    assert SessionState.from_json_bytes(table[b"u1"]).recent_items == ("i2", "i1")


def _item_user(e: Any) -> tuple[str, str]:
    doc = json.loads(e.message.value)
    return doc["item_id"], doc["user_id"]
