"""The co-visitation graph shared through a real Kafka: two workers, each seeing half the users, converge to the
same rows -- the rows an offline graph learns from all the events -- and a worker started later (a restart with
empty memory) rebuilds the same state from the compacted topic."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamrec.streams.covisit import CovisitConfig, CovisitDelta, CovisitGraph, DeltaBatch
from streamrec.streams.covisit_owner import OwnerStats, ProducerSender, parse_stats_line
from streamrec.streams.covisit_sync import CovisitOwner, CovisitPublisher, CovisitReplica
from streamrec.testing import KafkaForTests, create_topics, delete_topics, subprocess_environment

pytestmark = pytest.mark.integration

ITEMS = [f"item-{n}" for n in range(30)]


class Node:
    """What one worker runs for the collaborative signal: publisher, owner, replica, graph."""

    def __init__(
        self,
        bootstrap: str,
        deltas: str,
        rows: str,
        group: str,
        pool: ThreadPoolExecutor,
        flush_interval_s: float = 0.2,
    ) -> None:
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
            flush_interval_s=flush_interval_s,
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


async def test_rows_are_published_after_a_flush_interval_of_event_time_as_of_wall_time(
    kafka: KafkaForTests, new_topic: Callable[..., str], new_group: Callable[[str], str]
) -> None:
    """A replay of old events (or a backlog) carries hours of event time in seconds: the owner publishes once the
    merged deltas span a flush interval of their own time, without waiting for the interval of wall time -- so the
    rows lag a replayed stream by as much of its time as they would lag it live."""
    deltas_topic = new_topic("covisit-deltas", partitions=4)
    rows_topic = new_topic("covisit-rows", partitions=2, config={"cleanup.policy": "compact"})
    config = CovisitConfig()
    t0 = 1_700_000_000.0
    pool = ThreadPoolExecutor(2)
    node = Node(kafka.bootstrap, deltas_topic, rows_topic, new_group("covisit"), pool, flush_interval_s=600.0)
    try:
        await node.start()

        def deltas_at(ts: float, items: list[str]) -> list[CovisitDelta]:
            batch = DeltaBatch(config)
            previous: list[str] = []
            for item in items:
                batch.observe(item, 1.0, ts, previous)
                previous = [item, *previous]
            return batch.deltas()

        # deltas within one minute of event time: nothing is due for ten minutes of wall time
        await asyncio.gather(*await node.publisher.send(deltas_at(t0, ITEMS[:3])))
        await asyncio.gather(*await node.publisher.send(deltas_at(t0 + 60, ITEMS[3:6])))
        await asyncio.sleep(2.0)
        assert len(node.graph) == 0
        # deltas of the same stream 20 minutes of event time later: more than the interval is covered -- published
        await asyncio.gather(*await node.publisher.send(deltas_at(t0 + 1200, ITEMS[6:9])))
        await wait_for(lambda: all(item in node.graph for item in ITEMS[:9]), 20, "the rows of every delta so far")
    finally:
        await node.stop()
        pool.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# The owner as its own process (`streamrec covisit-owner`): what a worker starts by default, or what a user runs
# separately with STREAMREC_COVISIT_OWNER=external.


class OwnerCommand:
    """``streamrec covisit-owner --supervised`` as a real subprocess; its stats lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stats = OwnerStats()
        self.lines = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, bootstrap: str, app_id: str, log_path: Path) -> OwnerCommand:
        env = {
            **subprocess_environment({}),
            "STREAMREC_BOOTSTRAP": bootstrap,
            "STREAMREC_APP_ID": app_id,
            "STREAMREC_COVISIT_FLUSH_INTERVAL_S": "0.2",
            "STREAMREC_CREATE_TOPICS": "false",  # the test made them
        }
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamrec.cli",
                "covisit-owner",
                "--supervised",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
            )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.stats = parse_stats_line(line)  # the child writes nothing else on stdout
            self.lines += 1

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        status = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.wait_for(self._reader, 5)
        return status

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def test_owner_processes_converge_a_sigkill_loses_nothing_and_they_stop_cleanly(
    kafka: KafkaForTests, new_group: Callable[[str], str], tmp_path: Path
) -> None:
    app = new_group("owner")
    deltas_topic, rows_topic = f"{app}-covisit-deltas", f"{app}-covisit-rows"
    create_topics(kafka.bootstrap, {deltas_topic: 4})
    create_topics(kafka.bootstrap, {rows_topic: 2}, {"cleanup.policy": "compact"})
    config = CovisitConfig()
    batches = batches_of(user_streams(24, 12, seed=3), config)
    offline = CovisitGraph(config)
    for b in batches:
        offline.apply(b)
    expected = state(offline)
    half = len(batches) // 2

    pool = ThreadPoolExecutor(2)
    observer = Node(kafka.bootstrap, deltas_topic, rows_topic, f"{app}-unused", pool)  # publishes and replicates
    owners: list[OwnerCommand] = []
    try:
        await observer.start(own=False)
        first = await OwnerCommand.start(kafka.bootstrap, app, tmp_path / "owner1.log")
        owners.append(first)
        futs = []
        for deltas in batches[:half]:
            futs += await observer.publisher.send(deltas)
        await asyncio.gather(*futs)
        await wait_for(lambda: first.stats.merged > 0, 60, "the first owner to merge deltas")
        first.kill()  # SIGKILL: whatever it merged but had not published and committed is merged again below
        assert await first.wait_exit() == -9

        # two owners now share the partitions (a rebalance between processes), as two external deployments would
        second = await OwnerCommand.start(kafka.bootstrap, app, tmp_path / "owner2.log")
        third = await OwnerCommand.start(kafka.bootstrap, app, tmp_path / "owner3.log")
        owners += [second, third]
        futs = []
        for deltas in batches[half:]:
            futs += await observer.publisher.send(deltas)
        await asyncio.gather(*futs)
        await wait_for(
            lambda: same(state(observer.graph), expected), 90, "the published rows to match the offline graph"
        )
        await wait_for(lambda: second.stats.published + third.stats.published > 0, 10, "their stats lines")
        assert second.stats.invalid_deltas == third.stats.invalid_deltas == 0

        # supervised: end-of-file on stdin (the parent is gone) stops it; so does SIGTERM; both cleanly
        assert second.proc.stdin is not None
        second.proc.stdin.close()
        third.proc.terminate()
        assert await second.wait_exit() == 0
        assert await third.wait_exit() == 0
        log_text = (tmp_path / "owner2.log").read_text()
        assert "stdin closed" in log_text and "LeaveGroup request succeeded" in log_text
        # what they published in the end is still exactly the offline graph (nothing half-merged was left)
        await asyncio.sleep(1.0)
        assert same(state(observer.graph), expected)
    finally:
        for owner in owners:
            owner.kill()
        await observer.stop()
        pool.shutdown()
        delete_topics(kafka.bootstrap, [deltas_topic, rows_topic])
