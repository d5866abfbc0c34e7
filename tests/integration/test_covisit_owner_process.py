"""Where a worker's co-visitation owner runs (STREAMREC_COVISIT_OWNER), with real workers on the real broker:
by default in a child process the worker supervises (it learns through it, restarts it when it is killed,
stops it on SIGTERM, and the child goes when the worker is SIGKILLed); with ``external``, the worker runs
none and a separately started ``streamrec covisit-owner`` does the learning."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.streams.covisit_wire import decode_row
from streamrec.testing import (
    KafkaForTests,
    WorkerProcess,
    consume,
    produce,
    start_worker,
    subprocess_environment,
    worker_environment,
    worker_topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOGUE = {
    **{f"shoe-{n}": f"Running shoes model {n}" for n in range(6)},
    **{f"tea-{n}": f"Green tea blend number {n}" for n in range(6)},
    **{f"book-{n}": f"Science fiction novel volume {n}" for n in range(6)},
}
FIRST = sorted(k for k in CATALOGUE if not k.startswith("book"))  # the items of the events before the kill
LATER = sorted(k for k in CATALOGUE if k.startswith("book"))  # only after it
CATALOGUE_IDS = sorted(CATALOGUE)


def _events(items: list[str], users: int, start: int) -> list[tuple[bytes, bytes]]:
    out = []
    for u in range(users):
        for i in range(len(items)):
            item = items[(u + i) % len(items)]
            doc = {"user_id": f"u{start}-{u}", "type": "view", "item_id": item, "event_id": f"e{start}-{u}-{i}"}
            out.append((doc["user_id"].encode(), json.dumps(doc).encode()))
    return out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _merged(m: dict[str, float]) -> float:
    return m.get('streamrec_covisit_deltas_total{op="merged"}', 0.0)


def _scored(m: dict[str, float], by: str) -> float:
    return m.get(f'streamrec_covisit_scored_total{{by="{by}"}}', 0.0)


async def _rows_published(bootstrap: str, app_id: str, want: int) -> dict[str, int]:
    """Every item's newest row version in the compacted rows topic."""
    records = await consume(bootstrap, f"{app_id}-covisit-rows", want=want, timeout_s=30, idle_s=2)
    out: dict[str, int] = {}
    for r in records:
        if r.value is not None:
            row = decode_row(r.value)
            out[row.item] = max(out.get(row.item, 0), row.version)
    return out


def _start_owner_command(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``streamrec covisit-owner`` as a user would run it on its own (not supervised)."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "covisit-owner"],
            env=subprocess_environment(env),
            stdin=subprocess.DEVNULL,  # not supervised: end-of-file on stdin means nothing
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def started() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for w in workers:
        w.stop()


def _env(kafka: KafkaForTests, model: Path, data: Path, topics: dict[str, str], **settings: str) -> dict[str, str]:
    return worker_environment(
        kafka.bootstrap,
        model,
        data,
        topics,
        partitions="2",
        covisit_flush_interval_s="0.2",
        **settings,
    )


async def _catalogue(kafka: KafkaForTests, topics: dict[str, str]) -> None:
    await produce(
        kafka.bootstrap,
        topics["items_topic"],
        [(k.encode(), json.dumps({"item_id": k, "title": t}).encode()) for k, t in CATALOGUE.items()],
    )


async def test_the_default_worker_learns_through_its_owner_process_restarts_it_and_stops_it(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    topics = worker_topics()
    await _catalogue(kafka, topics)
    worker = start_worker(_env(kafka, exported_model, tmp_path / "data", topics), tmp_path / "worker.log")
    started.append(worker)
    worker.wait_ready()
    _wait(lambda: len(_children(worker.proc.pid)) == 1, 30, "the owner child process")
    [child] = _children(worker.proc.pid)

    await produce(kafka.bootstrap, topics["events_topic"], _events(FIRST, 6, 0))
    # learned through the child: merged (its stats lines), published, replicated back into the worker's graph
    worker.wait_until(lambda m: m.get("streamrec_covisit_rows", 0) == len(FIRST), 60, "rows of the first items")
    # the child's counters arrive on its next stats line (about every second), possibly after the rows
    worker.wait_until(
        lambda m: _merged(m) > 0 and m.get("streamrec_covisit_rows_published_total", 0) > 0, 10, "the owner's stats"
    )
    assert set(await _rows_published(kafka.bootstrap, topics["app_id"], len(FIRST))) == set(FIRST)
    # the child scores the worker's candidates too (covisit_serving=owner, the default), once it listens
    await produce(kafka.bootstrap, topics["events_topic"], _events(FIRST, 2, 10))
    before = worker.wait_until(lambda m: _scored(m, "owner") > 0, 30, "candidates scored by the owner process")

    os.kill(child, signal.SIGKILL)
    m = worker.wait_until(
        lambda m: m.get("streamrec_covisit_owner_restarts_total", 0) == 1, 30, "the owner to be restarted"
    )
    assert m.get("streamrec_worker_healthy") == 1.0
    _wait(lambda: len(_children(worker.proc.pid)) == 1 and _children(worker.proc.pid) != [child], 30, "a new child")
    [child2] = _children(worker.proc.pid)

    await produce(kafka.bootstrap, topics["events_topic"], _events(LATER + FIRST[:2], 6, 1))
    worker.wait_until(lambda m: m.get("streamrec_covisit_rows", 0) == len(CATALOGUE), 60, "rows of the later items")
    rows = await _rows_published(kafka.bootstrap, topics["app_id"], len(CATALOGUE))
    assert set(rows) == set(CATALOGUE)  # nothing lost across the kill; the new owner learned the new items
    # every delta sent was merged (some twice); the child's counts reach the worker within its stats interval
    worker.wait_until(
        lambda m: _merged(m) >= m['streamrec_covisit_deltas_total{op="sent"}'] > 0, 15, "the merged count"
    )
    # and the new child scores again (meanwhile the worker scored locally: nothing waited on the dead one)
    await produce(kafka.bootstrap, topics["events_topic"], _events(CATALOGUE_IDS, 2, 11))
    worker.wait_until(lambda m: _scored(m, "owner") > _scored(before, "owner"), 30, "scores from the new child")

    assert worker.stop() == 0  # SIGTERM: the worker stops its child first, cleanly
    assert not _alive(child2)
    log = worker.log_tail(400)
    assert "LeaveGroup request succeeded" in log and "stopping: publishing merged rows" in log


async def test_the_owner_process_goes_when_its_worker_is_killed(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    topics = worker_topics()
    await _catalogue(kafka, topics)
    worker = start_worker(_env(kafka, exported_model, tmp_path / "data", topics), tmp_path / "worker.log")
    started.append(worker)
    worker.wait_ready()
    _wait(lambda: len(_children(worker.proc.pid)) == 1, 30, "the owner child process")
    [child] = _children(worker.proc.pid)
    worker.kill()  # SIGKILL: no shutdown code runs in the worker; the child sees end-of-file on its stdin
    _wait(lambda: not _alive(child), 30, "the orphaned owner to exit")
    assert "stdin closed" in worker.log_tail(100)


async def test_external_worker_runs_no_owner_and_a_separate_owner_command_does_the_learning(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    topics = worker_topics()
    await _catalogue(kafka, topics)
    env = _env(kafka, exported_model, tmp_path / "data", topics, covisit_owner="external")
    worker = start_worker(env, tmp_path / "worker.log")
    started.append(worker)
    worker.wait_ready()
    assert _children(worker.proc.pid) == []
    await produce(kafka.bootstrap, topics["events_topic"], _events(FIRST, 6, 0))
    worker.wait_until(lambda m: m.get("streamrec_pipeline_recommendations_total", 0) >= 6 * len(FIRST), 60, "answers")
    await asyncio.sleep(2.0)  # 10 flush intervals: an owner would have published by now
    m = worker.metrics()
    assert (
        m.get("streamrec_covisit_rows") == 0 and _merged(m) == 0 and m['streamrec_covisit_deltas_total{op="sent"}'] > 0
    )
    assert _scored(m, "local") > 0 and _scored(m, "owner") == 0  # no owner process: this worker scores

    owner = _start_owner_command(env, tmp_path / "owner.log")
    try:
        worker.wait_until(lambda m: m.get("streamrec_covisit_rows", 0) == len(FIRST), 60, "rows from the owner")
        await produce(kafka.bootstrap, topics["events_topic"], _events(LATER, 6, 1))
        worker.wait_until(lambda m: m.get("streamrec_covisit_rows", 0) == len(CATALOGUE), 60, "rows of later items")
        owner.send_signal(signal.SIGINT)
        assert owner.wait(30) == 0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert set(await _rows_published(kafka.bootstrap, topics["app_id"], len(CATALOGUE))) == set(CATALOGUE)
    assert "LeaveGroup request succeeded" in (tmp_path / "owner.log").read_text()
