"""The worker's supervision of its co-visitation owner process, with scripted children (no broker): the stats line
protocol, counters added to the worker's metrics across restarts, malformed output ignored, restarts with
backoff, giving up after repeated failures, a bounded stop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streamrec.streams.covisit_owner import OwnerStats, parse_stats_line
from streamrec.streams.covisit_supervisor import OwnerProcess, OwnerProcessError, settings_environment
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.settings import WorkerSettings


def test_a_stats_line_round_trips() -> None:
    stats = OwnerStats(merged=12, published=3, invalid_deltas=1, invalid_rows=0)
    assert parse_stats_line(stats.to_line()) == stats
    assert parse_stats_line(b'{"merged":1,"published":2,"invalid_deltas":0,"invalid_rows":0,"extra":"x"}\n') == (
        OwnerStats(1, 2, 0, 0)
    )


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"hello\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b"null\n",
        b'{"merged": 1}\n',  # counters missing
        b'{"merged":-1,"published":0,"invalid_deltas":0,"invalid_rows":0}\n',
        b'{"merged":1.5,"published":0,"invalid_deltas":0,"invalid_rows":0}\n',
        b'{"merged":true,"published":0,"invalid_deltas":0,"invalid_rows":0}\n',
        b'{"merged":"1","published":0,"invalid_deltas":0,"invalid_rows":0}\n',
        b'{"merged":1,"published":0,"invalid_deltas":0,"invalid_rows":0,"pad":"' + b"x" * 5000 + b'"}\n',
    ],
)
def test_what_is_not_a_stats_line_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stats_line(line)


def test_since_counts_what_is_new_and_never_goes_negative() -> None:
    assert OwnerStats(5, 3, 1, 0).since(OwnerStats(2, 3, 0, 0)) == OwnerStats(3, 0, 1, 0)
    assert OwnerStats(1, 0, 0, 0).since(OwnerStats(4, 0, 0, 0)) == OwnerStats(0, 0, 0, 0)


def test_the_child_gets_exactly_the_workers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = WorkerSettings(
        app_id="shop",
        covisit_flush_interval_s=0.25,
        covisit=True,
        exclude_seen=False,
        data_dir=Path("/tmp/x"),
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="svc",
        kafka_password=SecretStr("s3cret"),
    )
    env = settings_environment(settings)
    assert env["STREAMREC_APP_ID"] == "shop"
    assert env["STREAMREC_EXCLUDE_SEEN"] == "false"
    assert "STREAMREC_MODEL_DIR" not in env  # None: left to the default
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert WorkerSettings() == settings


def _child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text("import json, os, signal, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def _line(merged: int, published: int = 0) -> str:
    return OwnerStats(merged, published).to_line().decode().strip()


def _metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def _value(m: WorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    v = m.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def _process(argv: list[str], m: WorkerMetrics, **kwargs: float) -> OwnerProcess:
    proc = OwnerProcess.for_worker(WorkerSettings(), m)
    proc.argv = argv
    for k, v in kwargs.items():
        setattr(proc, k, v)
    return proc


async def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_counters_reach_the_metrics_and_garbage_never_crashes_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = _child(
        tmp_path,
        f"""
        out = sys.stdout
        out.write({_line(2, 1)!r} + "\\n")
        out.write("some library printed this\\n")
        out.write('{{"merged": "lots"}}\\n')
        out.write("x" * 200000 + "\\n")  # longer than the reader's buffer
        out.write({_line(5, 4)!r} + "\\n")
        out.write({_line(5, 4)!r} + "\\n")  # the same totals again: nothing new
        out.flush()
        signal.signal(signal.SIGTERM, lambda *_: (out.write({_line(7, 6)!r} + "\\n"), out.flush(), sys.exit(0)))
        while True:
            time.sleep(0.05)
        """,
    )
    m = _metrics()
    owner = _process(argv, m)
    with caplog.at_level(logging.WARNING):
        await owner.start()
        await _wait(lambda: _value(m, "streamrec_covisit_rows_published_total") == 4)
        assert _value(m, "streamrec_covisit_deltas_total", {"op": "merged"}) == 5
        assert owner.pid is not None and owner.error is None
        status = await owner.stop(timeout_s=10)
    assert status == 0
    assert _value(m, "streamrec_covisit_deltas_total", {"op": "merged"}) == 7  # the final line, sent on SIGTERM
    assert _value(m, "streamrec_covisit_rows_published_total") == 6
    assert owner.malformed >= 3 and owner.restarts == 0  # an overlong line may count as more than one
    assert "not a stats line" in caplog.text


async def test_an_unexpected_exit_is_restarted_and_counted_and_its_counts_kept(tmp_path: Path) -> None:
    marker = tmp_path / "ran-once"
    argv = _child(
        tmp_path,
        f"""
        marker = {str(marker)!r}
        if not os.path.exists(marker):
            open(marker, "w").close()
            print({_line(5)!r}, flush=True)
            sys.exit(3)  # dies
        print({_line(2)!r}, flush=True)  # the new child counts from 0 again
        while True:
            time.sleep(0.05)
        """,
    )
    m = _metrics()
    owner = _process(argv, m, backoff_s=0.05)
    await owner.start()
    await _wait(lambda: _value(m, "streamrec_covisit_deltas_total", {"op": "merged"}) == 7)
    assert owner.restarts == 1 and _value(m, "streamrec_covisit_owner_restarts_total") == 1
    assert owner.error is None
    await owner.stop(timeout_s=10)


async def test_repeated_failures_fail_the_component(tmp_path: Path) -> None:
    m = _metrics()
    owner = _process(_child(tmp_path, "sys.exit(2)\n"), m, backoff_s=0.01, max_failures=3)
    await owner.start()
    await _wait(lambda: owner.error is not None)
    assert isinstance(owner.error, OwnerProcessError)
    assert "3 times" in str(owner.error) and "status 2" in str(owner.error)
    assert owner.restarts == 2
    await owner.stop(timeout_s=5)


async def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    argv = _child(
        tmp_path,
        f"""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print({_line(1)!r}, flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    m = _metrics()
    owner = _process(argv, m)
    await owner.start()
    await _wait(lambda: _value(m, "streamrec_covisit_deltas_total", {"op": "merged"}) == 1)
    t0 = asyncio.get_running_loop().time()
    status = await owner.stop(timeout_s=0.5)
    assert status == -9
    assert asyncio.get_running_loop().time() - t0 < 5
    assert owner.restarts == 0 and owner.error is None


async def test_stop_before_the_child_started_stops_it(tmp_path: Path) -> None:
    argv = _child(tmp_path, "time.sleep(30)\n")
    owner = _process(argv, _metrics())
    await owner.start()
    status = await owner.stop(timeout_s=10)  # SIGTERM's default action ends it at once
    assert status is None or status == -15


def test_on_uvloop_the_child_has_its_own_session_and_is_supervised(tmp_path: Path) -> None:
    """The worker's loop is uvloop by default (``STREAMREC_EVENT_LOOP``), whose subprocesses take no
    ``process_group``: the child gets a session of its own instead (so a process group of its own: a terminal's
    Ctrl-C reaches the worker only), its pipes work, and it stops on SIGTERM."""
    uvloop = pytest.importorskip("uvloop")
    ids = tmp_path / "ids.json"
    argv = _child(
        tmp_path,
        f"""
        with open({str(ids)!r}, "w") as f:
            json.dump({{"pgid": os.getpgid(0), "sid": os.getsid(0), "pid": os.getpid()}}, f)
        print({_line(3)!r}, flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    m = _metrics()

    async def scenario() -> int | None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        owner = _process(argv, m)
        await owner.start()
        await _wait(lambda: _value(m, "streamrec_covisit_deltas_total", {"op": "merged"}) == 3)
        assert owner.error is None
        return await owner.stop(timeout_s=10)

    loop = uvloop.new_event_loop()
    try:
        status = loop.run_until_complete(scenario())
    finally:
        loop.close()
    child = json.loads(ids.read_text())
    assert child["pgid"] == child["pid"] == child["sid"]  # leads its own session and process group
    assert child["pgid"] != os.getpgid(0)
    assert status == -15  # SIGTERM's default action
