from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from streamrec.cli import main
from streamrec.localkafka import LocalKafka, LocalKafkaConfig, LocalKafkaError, kafka_answers
from streamrec.localkafka.broker import _new_cluster_id


def test_cluster_id_has_kafkas_shape() -> None:
    for _ in range(200):
        cid = _new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")


def test_kafka_answers_false_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not kafka_answers("127.0.0.1", port, timeout=0.5)


def test_kafka_answers_false_for_a_non_kafka_server() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert not kafka_answers("127.0.0.1", port, timeout=1.0)
    finally:
        t.join(2)
        server.close()


def test_up_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = LocalKafka(LocalKafkaConfig(port=port, home=tmp_path, maven="definitely-not-maven"))
        with pytest.raises(LocalKafkaError, match="not a Kafka broker"):
            broker.up()


def test_down_without_broker_and_stale_pid_file(tmp_path: Path) -> None:
    (tmp_path / "kafka.pid").write_text("999999999\n")
    broker = LocalKafka(LocalKafkaConfig(port=1, home=tmp_path))
    assert broker.down() is False
    assert not (tmp_path / "kafka.pid").exists()


def test_missing_maven_is_a_clear_error(tmp_path: Path) -> None:
    broker = LocalKafka(LocalKafkaConfig(home=tmp_path, cache_dir=tmp_path / "cache", maven="no-such-mvn"))
    with pytest.raises(LocalKafkaError, match="Maven"):
        broker.resolve_jars()


def test_server_properties_bind_loopback_and_ports(tmp_path: Path) -> None:
    broker = LocalKafka(LocalKafkaConfig(host="127.0.0.1", port=19555, home=tmp_path))
    props = dict(
        line.split("=", 1) for line in broker._server_properties().splitlines() if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19555,CONTROLLER://127.0.0.1:19556"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19555"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_cli_status_exit_code_when_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["kafka", "status", "--port", str(port), "--home", str(tmp_path)]) == 3
    assert "stopped" in capsys.readouterr().out
