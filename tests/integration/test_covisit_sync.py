"""The co-visitation graph shared through a real Kafka: two workers, each seeing half the users, converge to the
same rows -- the rows an offline graph learns from all the events -- and a worker started later (a restart with
empty memory) rebuilds the same state from the compacted topic."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streamrec.streams.covisit import CovisitConfig, CovisitDelta, CovisitGraph, DeltaBatch
from streamrec.streams.covisit_sync import CovisitOwner, CovisitPublisher, CovisitReplica
from streamrec.testing import KafkaForTests

pytestmark = pytest.mark.integration

ITEMS = [f"item-{n}" for n in range(30)]


class ProducerSender:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self.producer.send(self.topic, value, key=key, partition=partition)
        return fut


class Node:
    """What one worker runs for the collaborative signal: publisher, owner, replica, graph."""

    def __init__(self, bootstrap: str, deltas: str, rows: str, group: str, pool: ThreadPoolExecutor) -> None:
        self.graph = CovisitGraph(CovisitConfig())
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        self.replica = CovisitReplica(bootstrap=bootstrap, topic=rows, graph=self.graph, pool=pool)
        self.owner = CovisitOwner(
            bootstrap=bootstrap,
            group_id=group,
            deltas_topic=deltas,
            rows_out=ProducerSender(self.producer, rows),
            graph=self.graph,
            replica=self.replica,
            pool=pool,
            flush_interval_s=0.2,
        )
        self.publisher = CovisitPublisher(ProducerSender(self.producer, deltas), partitions=4)

    async def start(self, own: bool = True) -> None:
        await self.producer.start()
        await self.replica.start()
        await self.replica.wait_ready()
        if own:
            await self.owner.start()

    async def stop(self) -> None:
        await self.owner.stop()
        await self.replica.stop()
        await self.producer.stop()


def user_streams(n_users: int, length: int, seed: int = 0) -> dict[str, list[tuple[str, float]]]:
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    return {
        f"u{u}": [(rng.choice(ITEMS[: 10 + u % 20]), t0 + 60 * (u * length + i)) for i in range(length)]
        for u in range(n_users)
    }


def batches_of(streams: dict[str, list[tuple[str, float]]], config: CovisitConfig) -> list[list[CovisitDelta]]:
    """The deltas a hot path would emit, one batch per user."""
    out = []
    for events in streams.values():
        batch = DeltaBatch(config)
        previous: list[str] = []
        for item, ts in events:
            batch.observe(item, 1.0, ts, previous)
            previous = [item, *(p for p in previous if p != item)]
        out.append(batch.deltas())
    return out


def state(graph: CovisitGraph) -> dict[str, tuple[float, dict[str, float]]]:
    """Every row, valued at one time (rows merged in another order may keep another reference time)."""
    out = {}
    t = 1_700_000_000.0
    for item in ITEMS:
        row = graph.row(item)
        if row is not None:
            f = 0.5 ** ((t - row.ref_s) / graph.config.half_life_s)
            out[item] = (row.n * f, {j: w * f for j, w in zip(row.ids, row.weights, strict=True)})
    return out


def same(a: dict[str, tuple[float, dict[str, float]]], b: dict[str, tuple[float, dict[str, float]]]) -> bool:
    if a.keys() != b.keys():
        return False
    for item, (n, nbrs) in a.items():
        n2, nbrs2 = b[item]
        if abs(n - n2) > 1e-6 * max(1.0, n) or nbrs.keys() != nbrs2.keys():
            return False
        if any(abs(w - nbrs2[j]) > 1e-5 * max(1.0, w) for j, w in nbrs.items()):
            return False
    return True


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_two_workers_converge_to_the_offline_graph_and_a_restart_rebuilds_it(
    kafka: KafkaForTests, new_topic: Callable[..., str], new_group: Callable[[str], str]
) -> None:
    deltas_topic = new_topic("covisit-deltas", partitions=4)
    rows_topic = new_topic("covisit-rows", partitions=2, config={"cleanup.policy": "compact"})
    group = new_group("covisit")
    config = CovisitConfig()
    streams = user_streams(16, 12)
    batches = batches_of(streams, config)
    offline = CovisitGraph(config)
    for b in batches:
        offline.apply(b)
    expected = state(offline)

    pool = ThreadPoolExecutor(2)
    a = Node(kafka.bootstrap, deltas_topic, rows_topic, group, pool)
    b = Node(kafka.bootstrap, deltas_topic, rows_topic, group, pool)
    late: Node | None = None
    try:
        await a.start()
        await b.start()
        # each worker publishes the deltas of "its" users only (its events partitions)
        futs = []
        for i, deltas in enumerate(batches):
            node = a if i % 2 == 0 else b
            futs += await node.publisher.send(deltas)
        await asyncio.gather(*futs)
        await wait_for(
            lambda: same(state(a.graph), expected) and same(state(b.graph), expected),
            60,
            "both workers to serve the offline graph",
        )
        # a worker that starts now, with empty memory, reads the same state back from the compacted topic
        late = Node(kafka.bootstrap, deltas_topic, rows_topic, group, pool)
        await late.start(own=False)
        await wait_for(lambda: same(state(late.graph), expected), 30, "the restarted worker to catch up")  # type: ignore[union-attr]
        # and what it serves is what the others serve
        recent = ["item-3", "item-7", "item-1"]
        now = 1_700_000_000.0 + 86400
        assert a.graph.scores(recent, now).keys() == late.graph.scores(recent, now).keys()
    finally:
        for node in (a, b, late):
            if node is not None:
                await node.stop()
        pool.shutdown()
