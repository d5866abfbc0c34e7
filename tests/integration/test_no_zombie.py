"""No zombie workers: a failure that escapes the hot path's safety net (injected here) makes the worker exit with
status 1 within seconds -- not sit there looking healthy -- and the event stays un-acked (answered after the
restart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrec.streams.schemas import decode_recommendation
from streamrec.testing import (
    KafkaForTests,
    WorkerProcess,
    consume,
    free_port,
    produce,
    start_worker,
    worker_environment,
    worker_topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNER = """
import sys
from streamrec.streams import hotpath

async def broken(self, valid, start_mono, decode_s_per_event):
    if valid:
        raise RuntimeError("injected: the safety net itself failed")

hotpath.HotPath._serve_isolating = broken
from streamrec.cli import main
sys.exit(main(["--log-level", "INFO", "worker"]))
"""


def _start_broken_worker(env: dict[str, str], tmp_path: Path) -> WorkerProcess:
    port = free_port()
    (tmp_path / "runner.py").write_text(RUNNER)
    with (tmp_path / "broken.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(tmp_path / "runner.py")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "STREAMREC_METRICS_HOST": "127.0.0.1", "STREAMREC_METRICS_PORT": str(port)},
        )
    return WorkerProcess(proc, f"http://127.0.0.1:{port}/metrics", tmp_path / "broken.log")


async def test_a_failed_hot_path_exits_non_zero_promptly_and_loses_nothing(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path
) -> None:
    topics = worker_topics()
    env = worker_environment(
        kafka.bootstrap, exported_model, tmp_path / "w", topics, worker_name="w1", partitions="1", k="1"
    )
    broken = _start_broken_worker(env, tmp_path)
    proc = broken.proc
    try:
        broken.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
        await produce(kafka.bootstrap, topics["items_topic"], [(b"a", b'{"item_id": "a", "title": "a thing"}')])
        broken.wait_ready()
        await produce(
            kafka.bootstrap,
            topics["events_topic"],
            [(b"u", json.dumps({"user_id": "u", "type": "view", "item_id": "a", "event_id": "e1"}).encode())],
        )
        t0 = time.monotonic()
        rc = proc.wait(timeout=60)
        exited_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 1, broken.log_tail()
    assert exited_s < 30, f"took {exited_s:.1f} s"
    assert "CRITICAL] hot_path failed" in (tmp_path / "broken.log").read_text()

    fixed = start_worker(env, tmp_path / "fixed.log")  # the supervisor's restart, with the bug gone
    try:
        fixed.wait_ready()
        recs = await consume(kafka.bootstrap, topics["recommendations_topic"], want=1, timeout_s=60)
        assert [decode_recommendation(r.value).event_id for r in recs] == ["e1"]
    finally:
        assert fixed.stop() == 0
