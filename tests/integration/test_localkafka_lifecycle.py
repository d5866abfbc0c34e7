"""`streamrec kafka up/status/down` on its own port and home: idempotent, stale PID handled, no leftovers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from streamrec.cli import main
from streamrec.localkafka import LocalKafka, LocalKafkaConfig, kafka_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port < 65000:
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free port pair")


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_up_status_down_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port_pair()
    flags = ["--port", str(port), "--home", str(tmp_path / "kafka")]
    broker = LocalKafka(LocalKafkaConfig(port=port, home=tmp_path / "kafka"))
    pids = []
    for _ in range(2):
        assert main(["kafka", "up", *flags]) == 0
        pid = int((tmp_path / "kafka" / "kafka.pid").read_text())
        assert main(["kafka", "up", *flags]) == 0  # idempotent: same broker, not a second one
        assert int((tmp_path / "kafka" / "kafka.pid").read_text()) == pid
        assert main(["kafka", "status", *flags]) == 0
        assert kafka_answers("127.0.0.1", port)
        assert main(["kafka", "down", *flags]) == 0
        assert not _pid_alive(pid) or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        assert main(["kafka", "status", *flags]) == 3
        assert not kafka_answers("127.0.0.1", port)
        pids.append(pid)
    assert pids[0] != pids[1]
    assert broker.status().pid is None
    assert "stopped" in capsys.readouterr().out


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    port = _free_port_pair()
    home = tmp_path / "kafka"
    home.mkdir()
    # a PID that is alive but is not our broker (this test process), and one that does not exist
    for stale in (os.getpid(), 2**22 + 12345):
        (home / "kafka.pid").write_text(f"{stale}\n")
        broker = LocalKafka(LocalKafkaConfig(port=port, home=home))
        status = broker.up()
        try:
            assert status.running and not status.external
            assert status.pid is not None and status.pid != stale
        finally:
            assert broker.down()
        assert not (home / "kafka.pid").exists()
