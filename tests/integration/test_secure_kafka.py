"""streamrec against a secured Apache Kafka: SASL_SSL (SCRAM), mutual TLS, ACLs (StandardAuthorizer).

One secured broker for the module's tests (``streamrec.testing.start_secure_broker``: the project's
own LocalKafka with ``secure=True``, on free ports and its own home; stopped at the end). Users:
``worker`` has exactly the ACLs README 'Production Kafka' lists, ``noread`` lacks READ on the
events topic, ``nowrite`` lacks WRITE on the recommendations topic; ``admin`` is the super-user.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.cli import main
from streamrec.commands.replay import ReplaySettings, replay
from streamrec.localkafka.tls import ensure_tls_files
from streamrec.streams.acls import Acl, Operation, PatternType, ResourceType, create_acls
from streamrec.streams.schemas import decode_recommendation
from streamrec.streams.security import KafkaSecurity
from streamrec.testing import (
    KafkaForTests,
    WorkerProcess,
    consume,
    create_topics,
    delete_topics,
    produce,
    run_off_loop,
    security_environment,
    start_secure_broker,
    start_worker,
    subprocess_environment,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORDS = {
    "worker": "w0rker-Secret-7d1c",
    "replayer": "r3player-Secret-0c2e",
    "noread": "n0read-Secret-91aa",
    "nowrite": "n0write-Secret-44bf",
}
N_EVENTS = 120


def _free_port_triple() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        if port > 65000:
            continue
        try:
            with socket.socket() as b, socket.socket() as c:
                b.bind(("127.0.0.1", port + 1))
                c.bind(("127.0.0.1", port + 2))
        except OSError:
            continue
        return port
    raise RuntimeError("no three free consecutive ports")


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaForTests]:
    home = tmp_path_factory.mktemp("secure-kafka")
    kafka = start_secure_broker("127.0.0.1", _free_port_triple(), home / "broker", users=PASSWORDS)
    try:
        yield kafka
    finally:
        kafka.stop_if_started_here()


def _password_file(tmp: Path, user: str) -> Path:
    path = tmp / f"{user}.password"
    path.write_text(PASSWORDS[user] + "\n")
    path.chmod(0o600)
    return path


def _worker_acls(user: str, t: dict[str, str], *, skip: tuple[str, Operation] | None = None) -> list[Acl]:
    """README 'Production Kafka': the ACLs one worker principal needs."""
    p = f"User:{user}"
    acls = [
        Acl(p, ResourceType.TOPIC, t["events_topic"], Operation.READ),
        Acl(p, ResourceType.TOPIC, t["items_topic"], Operation.READ),
        Acl(p, ResourceType.TOPIC, t["recommendations_topic"], Operation.WRITE),
        Acl(p, ResourceType.TOPIC, t["dead_letter_topic"], Operation.WRITE),
        Acl(p, ResourceType.GROUP, t["app_id"], Operation.READ),
        Acl(p, ResourceType.GROUP, f"{t['app_id']}-covisit", Operation.READ),
        # Faust's internal topics (<app_id>-sessions-changelog, <app_id>-__assignor-__leader): it creates them
        *(
            Acl(p, ResourceType.TOPIC, f"{t['app_id']}-", op, PatternType.PREFIXED)
            for op in (Operation.READ, Operation.WRITE, Operation.CREATE)
        ),
    ]
    # a principal lacking the one operation under test still sees the topic (DESCRIBE), as in real clusters
    if skip is not None:
        topic, op = skip
        acls = [a for a in acls if not (a.name == t[topic] and a.operation == op)]
        acls.append(Acl(p, ResourceType.TOPIC, t[topic], Operation.DESCRIBE))
    return acls


@pytest.fixture
def topics(secure_kafka: KafkaForTests) -> Iterator[dict[str, str]]:
    t = {
        "app_id": unique_name("sec-app"),
        "events_topic": unique_name("sec-events"),
        "items_topic": unique_name("sec-items"),
        "recommendations_topic": unique_name("sec-recs"),
        "dead_letter_topic": unique_name("sec-dlq"),
    }
    create_topics(
        secure_kafka.bootstrap,
        {t[k]: 2 for k in ("events_topic", "recommendations_topic", "dead_letter_topic")},
        security=secure_kafka.security,
    )
    create_topics(
        secure_kafka.bootstrap, {t["items_topic"]: 1}, {"cleanup.policy": "compact"}, security=secure_kafka.security
    )
    yield t
    delete_topics(
        secure_kafka.bootstrap,
        [v for k, v in t.items() if k != "app_id"]
        + [f"{t['app_id']}-sessions-changelog", f"{t['app_id']}-__assignor-__leader"],
        security=secure_kafka.security,
    )


def _env(
    kafka: KafkaForTests,
    security: KafkaSecurity,
    password_file: Path | None,
    model: Path,
    data: Path,
    t: dict[str, str],
) -> dict[str, str]:
    return {
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        "STREAMREC_MODEL_DIR": str(model),
        "STREAMREC_DATA_DIR": str(data),
        "STREAMREC_PARTITIONS": "2",
        "STREAMREC_CREATE_TOPICS": "true",
        **security_environment(security, password_file),
        **{f"STREAMREC_{k.upper()}": v for k, v in t.items()},
    }


def _run_worker_cli(env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str, float]:
    """``streamrec worker`` in a subprocess that is expected to exit on its own: (rc, output, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "--log-level", "DEBUG", "worker"],
        env={**subprocess_environment(env), "STREAMREC_METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


async def _committed(kafka: KafkaForTests, group: str) -> dict[Any, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.security.aiokafka_kwargs())
    await admin.start()
    try:
        return dict(await admin.list_consumer_group_offsets(group))
    finally:
        await admin.close()


# ------------------------------------------------------------------------------------------ end to end
async def test_worker_replay_and_tail_end_to_end_over_sasl_ssl(
    secure_kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str]
) -> None:
    kafka = secure_kafka
    await create_acls(kafka.bootstrap, kafka.security, _worker_acls("worker", topics))
    # the replayer: WRITE on its two topics only (idempotent producer: implied by WRITE since Kafka 3.0)
    await create_acls(
        kafka.bootstrap,
        kafka.security,
        [Acl("User:replayer", ResourceType.TOPIC, topics[k], Operation.WRITE) for k in ("events_topic", "items_topic")]
        + [Acl("User:replayer", ResourceType.TOPIC, topics["recommendations_topic"], Operation.READ)],
    )
    worker_security = kafka.as_user("worker", PASSWORDS["worker"])
    pw_file = _password_file(tmp_path, "worker")
    env = _env(kafka, worker_security, pw_file, exported_model, tmp_path / "w", topics)
    worker: WorkerProcess = start_worker(env, tmp_path / "worker.log")
    try:
        worker.wait_until(lambda m: m.get("streamrec_index_ready") == 1.0, 180, "readiness")

        # replay as another principal (SCRAM-SHA-256 this time), password from a file
        replayer_pw = _password_file(tmp_path, "replayer")
        stats = await replay(
            ReplaySettings(
                bootstrap=kafka.bootstrap,
                events_topic=topics["events_topic"],
                items_topic=topics["items_topic"],
                create_topics=False,
                limit=N_EVENTS,
                users=3,
                search_fraction=0.0,
                rate=0.0,
                kafka_security_protocol="SASL_SSL",
                kafka_ca_file=kafka.broker.secure_layout.tls.ca_cert,
                kafka_sasl_mechanism="SCRAM-SHA-256",
                kafka_username="replayer",
                kafka_password_file=replayer_pw,
            )
        )
        assert stats.events == N_EVENTS and stats.items > 1000

        # tail (the CLI, as the replayer, which may also READ the recommendations) prints them all
        out = io.StringIO()
        tail_env = {
            **security_environment(kafka.as_user("replayer", PASSWORDS["replayer"]), replayer_pw),
            "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        }
        with _environ(tail_env), redirect_stdout(out):
            rc = await asyncio.to_thread(
                main,
                [
                    "tail",
                    "--recommendations-topic",
                    topics["recommendations_topic"],
                    "--from-beginning",
                    "--max-messages",
                    str(N_EVENTS),
                    "--timeout-s",
                    "120",
                ],
            )
        assert rc == 0
        lines = [line for line in out.getvalue().splitlines() if line.startswith("user ")]
        assert len(lines) == N_EVENTS, out.getvalue()[-2000:]
        assert f"{N_EVENTS} recommendations, end-to-end latency" in out.getvalue()

        recs = await consume(
            kafka.bootstrap, topics["recommendations_topic"], want=N_EVENTS, idle_s=1.0, security=kafka.security
        )
        assert len({decode_recommendation(r.value).event_id for r in recs}) == N_EVENTS
        metrics_text = _metrics_text(worker)
        assert metrics_text and "streamrec_pipeline_recommendations_total" in metrics_text
        # its co-visitation owner process (the default) learned over the same SASL_SSL connection settings
        worker.wait_until(
            lambda m: (
                m.get('streamrec_covisit_deltas_total{op="merged"}', 0) > 0
                and m.get("streamrec_covisit_rows_published_total", 0) > 0
            ),
            60,
            "the owner process to merge and publish",
        )
        assert worker.stop() == 0
        log = (tmp_path / "worker.log").read_text()
        assert "SASL_SSL, SCRAM-SHA-512 as 'worker'" in log  # it said how it connected ...
        for secret in PASSWORDS.values():  # ... and never with what
            assert secret not in log
            assert secret not in metrics_text
        committed = await _committed(kafka, topics["app_id"])
        assert sum(o.offset for tp, o in committed.items() if tp.topic == topics["events_topic"]) == N_EVENTS
    finally:
        worker.stop()


def _metrics_text(worker: WorkerProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(worker.metrics_url, timeout=5) as resp:
        return str(resp.read().decode())


class _environ:
    """Set environment variables for a block (the CLI reads its settings from the environment)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {k: os.environ.get(k) for k in values}

    def __enter__(self) -> None:
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------------ connection failures
def test_bad_connections_fail_fast_with_a_clear_message(
    secure_kafka: KafkaForTests, exported_model: Path, tmp_path: Path, topics: dict[str, str]
) -> None:
    kafka = secure_kafka
    good = kafka.as_user("worker", PASSWORDS["worker"])
    other_ca = ensure_tls_files(tmp_path / "other-ca", "127.0.0.1").ca_cert  # a CA that signed nothing here
    wrong_pw = tmp_path / "wrong.password"
    wrong_pw.write_text("not-the-password\n")
    cases = {
        "wrong password": (
            security_environment(good, wrong_pw),
            "SASL authentication of user 'worker' (SCRAM-SHA-512) failed",
        ),
        "unknown CA": (
            {
                **security_environment(good, _password_file(tmp_path, "worker")),
                "STREAMREC_KAFKA_CA_FILE": str(other_ca),
            },
            "TLS: the certificate of the broker at " + kafka.bootstrap + " is not trusted by the CA file",
        ),
        "PLAINTEXT client on the TLS port": (
            {"STREAMREC_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            f"the listener at {kafka.bootstrap} speaks TLS but this client's security protocol is PLAINTEXT",
        ),
    }
    report = []
    for name, (security_env, expected) in cases.items():
        env = {
            "STREAMREC_BOOTSTRAP": kafka.bootstrap,
            "STREAMREC_MODEL_DIR": str(exported_model),
            "STREAMREC_DATA_DIR": str(tmp_path / "w"),
            **security_env,
            **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
        }
        rc, output, seconds = _run_worker_cli(env)
        report.append(f"{name}: exit {rc} after {seconds:.1f} s: {output.strip().splitlines()[-1]}")
        assert rc == 2, f"{name}: {output[-3000:]}"
        assert expected in output, f"{name}: {output[-3000:]}"
        assert seconds < 30, f"{name} took {seconds:.0f} s"
        for secret in (*PASSWORDS.values(), "not-the-password"):
            assert secret not in output, f"{name}: a password was printed"
    print("\n".join(report))


# ------------------------------------------------------------------------------------------ authorisation
@pytest.mark.parametrize(
    ("user", "missing", "expected"),
    [
        ("noread", ("events_topic", Operation.READ), "READ on topic {events_topic!r}"),
        ("nowrite", ("recommendations_topic", Operation.WRITE), "WRITE on topic {recommendations_topic!r}"),
    ],
)
def test_a_principal_without_its_acls_gets_a_clear_error_and_consumes_nothing(
    secure_kafka: KafkaForTests,
    exported_model: Path,
    tmp_path: Path,
    topics: dict[str, str],
    user: str,
    missing: tuple[str, Operation],
    expected: str,
) -> None:
    kafka = secure_kafka
    run_off_loop(create_acls(kafka.bootstrap, kafka.security, _worker_acls(user, topics, skip=missing)))
    run_off_loop(
        produce(
            kafka.bootstrap,
            topics["events_topic"],
            [
                (b"u1", b'{"user_id": "u1", "type": "search", "query": "running shoes", "event_id": "e1"}'),
            ],
            security=kafka.security,
        )
    )
    env = _env(
        kafka,
        kafka.as_user(user, PASSWORDS[user]),
        _password_file(tmp_path, user),
        exported_model,
        tmp_path / "w",
        topics,
    )
    rc, output, seconds = _run_worker_cli(env)
    print(f"{user}: exit {rc} after {seconds:.1f} s: {output.strip().splitlines()[-1]}")
    assert rc == 2, output[-3000:]
    assert f"Kafka authorisation: user {user!r} is not allowed " + expected.format(**topics) in output, output[-3000:]
    assert seconds < 30
    assert PASSWORDS[user] not in output
    # nothing consumed, nothing committed, nothing produced
    assert run_off_loop(_committed(kafka, topics["app_id"])) == {}
    recs = run_off_loop(
        consume(
            kafka.bootstrap, topics["recommendations_topic"], want=0, timeout_s=3, idle_s=1, security=kafka.security
        )
    )
    assert recs == []


def test_tail_without_read_on_the_recommendations_topic_says_so(
    secure_kafka: KafkaForTests, tmp_path: Path, topics: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = secure_kafka
    run_off_loop(
        create_acls(
            kafka.bootstrap,
            kafka.security,
            [
                Acl("User:noread", ResourceType.TOPIC, topics["recommendations_topic"], Operation.DESCRIBE),
            ],
        )
    )
    env = {
        **security_environment(kafka.as_user("noread", PASSWORDS["noread"]), _password_file(tmp_path, "noread")),
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
    }
    with _environ(env):
        rc = main(["tail", "--recommendations-topic", topics["recommendations_topic"], "--timeout-s", "5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"user 'noread' is not allowed READ on topic {topics['recommendations_topic']!r}" in err


# ------------------------------------------------------------------------------------------ mutual TLS, --help
async def test_mutual_tls_listener_round_trip(secure_kafka: KafkaForTests, topics: dict[str, str]) -> None:
    kafka = secure_kafka
    bootstrap, security = kafka.mutual_tls()
    topic = topics["events_topic"]
    await create_acls(
        kafka.bootstrap,
        kafka.security,
        [Acl("User:streamrec-client", ResourceType.TOPIC, topic, op) for op in (Operation.READ, Operation.WRITE)],
    )
    await produce(bootstrap, topic, [(b"k", b"over mutual TLS")], security=security)
    got = await consume(bootstrap, topic, want=1, timeout_s=20, idle_s=0.5, security=security)
    assert [r.value for r in got] == [b"over mutual TLS"]


def test_the_password_is_not_in_help(secure_kafka: KafkaForTests, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("worker", "replay", "tail", "bench", "demo"):
        with _environ({"STREAMREC_KAFKA_PASSWORD": PASSWORDS["worker"]}), pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--kafka-password-file" in out, command
        assert PASSWORDS["worker"] not in out, command
        assert "(set, not shown)" in out, command


def test_kafka_status_on_the_secured_broker(secure_kafka: KafkaForTests, capsys: pytest.CaptureFixture[str]) -> None:
    config = secure_kafka.broker.config
    assert main(["kafka", "status", "--secure", "--port", str(config.port), "--home", str(config.home)]) == 0
    out = capsys.readouterr().out
    assert f"running: Apache Kafka at {config.bootstrap}" in out
    assert "STREAMREC_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in out
    assert secure_kafka.broker.secure_layout.password("admin") not in out


def test_sasl_plain_at_debug_level_logs_no_password(
    secure_kafka: KafkaForTests, tmp_path: Path, topics: dict[str, str]
) -> None:
    """aiokafka logs every request at DEBUG, and a SASL/PLAIN authentication request holds the password in
    clear: the CLI's log redaction must remove it (and PLAIN works, over TLS)."""
    kafka = secure_kafka
    run_off_loop(
        create_acls(
            kafka.bootstrap,
            kafka.security,
            [
                Acl("User:replayer", ResourceType.TOPIC, topics["events_topic"], Operation.WRITE),
            ],
        )
    )
    env = {
        **security_environment(
            kafka.as_user("replayer", PASSWORDS["replayer"], mechanism="PLAIN"), _password_file(tmp_path, "replayer")
        ),
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec.cli",
            "--log-level",
            "DEBUG",
            "replay",
            "--events-topic",
            topics["events_topic"],
            "--no-send-items",
            "--no-create-topics",
            "--limit",
            "20",
            "--users",
            "2",
        ],
        env=subprocess_environment(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "sent 0 items and 20 events" in output
    assert "SaslAuthenticateRequest_v1(sasl_auth_bytes=b'replayer\\x00replayer\\x00***')" in output  # redacted
    assert PASSWORDS["replayer"] not in output
