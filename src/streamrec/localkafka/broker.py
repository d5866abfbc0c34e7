"""A local, single-node Apache Kafka (KRaft: broker and controller in one JVM) for demos and tests.

``LocalKafka.up()`` resolves Kafka's jars from Maven Central with Maven (cached in the user's cache
directory, and by Maven in ``~/.m2``), formats KRaft storage once, starts the JVM in its own
process session bound to the configured loopback address, and waits until the broker answers a
Kafka ``ApiVersions`` request. ``down()`` stops it by PID (SIGTERM, then SIGKILL after a timeout).
``up()`` is idempotent: a broker it already started is reused, a stale PID file is removed, and a
broker that somebody else started on the same address is reported and left alone.

``secure=True`` starts the same broker locked down like a production cluster (see
:mod:`streamrec.localkafka.secure`): a SASL_SSL listener (SCRAM-SHA-256/512) on ``port``, a mutual-TLS
listener on ``port + 2``, ACLs enforced by Kafka's ``StandardAuthorizer``, a super-user for admin work.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from streamrec.errors import StreamrecError
from streamrec.localkafka import secure

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class LocalKafkaError(StreamrecError):
    """The local broker could not be resolved, formatted, started or stopped."""


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamrec" / "kafka"


def _default_state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "streamrec"


@dataclass(frozen=True)
class LocalKafkaConfig:
    """Where and how the local broker runs. ``home`` holds its PID file, logs, config and data."""

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 0  # 0: port + 1
    version: str = KAFKA_VERSION
    scala: str = SCALA_VERSION
    home: Path = field(default_factory=lambda: _default_state_dir() / "kafka-9092")
    cache_dir: Path = field(default_factory=_default_cache_dir)
    heap: str = "512m"
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    maven: str = "mvn"
    java: str = "java"
    secure: bool = False  # SASL_SSL + mTLS listeners, ACLs (streamrec.localkafka.secure)
    users: tuple[tuple[str, str], ...] = ()  # secure: extra SCRAM users (name, password) created at format time

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def effective_controller_port(self) -> int:
        return self.controller_port or self.port + 1

    @property
    def mtls_port(self) -> int:
        """secure: the mutual-TLS (SSL, client certificate required) listener's port."""
        return self.port + 2


@dataclass(frozen=True)
class BrokerStatus:
    bootstrap: str
    running: bool  # a broker answers on the address
    pid: int | None  # our broker's PID, when we started it
    external: bool  # a broker answers that streamrec did not start
    home: Path

    def describe(self) -> str:
        if self.running and not self.external:
            return f"running: Apache Kafka at {self.bootstrap} (pid {self.pid}, home {self.home})"
        if self.running:
            return f"running: a Kafka broker not started by streamrec answers at {self.bootstrap}"
        return f"stopped: nothing answers at {self.bootstrap} (home {self.home})"


def kafka_answers(host: str, port: int, timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None) -> bool:
    """True when a Kafka broker answers an ApiVersions (v0) request at host:port (over TLS with ``ssl_context``;
    ApiVersions is answered before SASL authentication)."""
    client_id = b"streamrec-probe"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if ssl_context is not None:
                sock = stack.enter_context(ssl_context.wrap_socket(sock, server_hostname=host))
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            if size < 6 or size > 1 << 20:
                return False
            payload = _recv_exact(sock, size)
            got_correlation, error_code = struct.unpack(">ih", payload[:6])
            return bool(got_correlation == correlation_id and error_code == 0)
    except OSError:
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid().toString(): url-safe base64, no padding, no leading '-'.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class LocalKafka:
    """Start, inspect and stop one local broker. Thread-unsafe; one per process is plenty."""

    def __init__(self, config: LocalKafkaConfig) -> None:
        self.config = config

    # ---- paths ---------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.config.home

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def secure_layout(self) -> secure.SecureLayout:
        return secure.SecureLayout(self.home)

    def _probe(self, timeout: float = 2.0) -> bool:
        c = self.config
        ctx = secure.probe_context(self.secure_layout) if c.secure else None
        return kafka_answers(c.host, c.port, timeout=timeout, ssl_context=ctx)

    @property
    def libs_dir(self) -> Path:
        return self.config.cache_dir / f"kafka_{self.config.scala}-{self.config.version}" / "libs"

    # ---- status --------------------------------------------------------------------------
    def _our_pid(self) -> int | None:
        """The PID in the PID file if that process is alive and is our broker; else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        args = [a.decode(errors="replace") for a in cmdline]
        if "kafka.Kafka" in args and str(self.properties_file) in args:
            return pid
        return None

    def status(self) -> BrokerStatus:
        pid = self._our_pid()
        answers = self._probe()
        return BrokerStatus(
            bootstrap=self.config.bootstrap,
            running=answers,
            pid=pid,
            external=answers and pid is None,
            home=self.home,
        )

    # ---- jars ----------------------------------------------------------------------------
    def resolve_jars(self) -> Path:
        """Kafka's runtime classpath, resolved once with Maven and cached; returns the libs dir."""
        libs = self.libs_dir
        marker = libs.parent / ".complete"
        if marker.exists() and any(libs.glob("kafka_*.jar")):
            return libs
        if shutil.which(self.config.maven) is None:
            raise LocalKafkaError(
                f"Maven ({self.config.maven!r}) is not on PATH: install it (Debian: apt-get install maven) "
                "so that Kafka's jars can be resolved from Maven Central"
            )
        libs.parent.mkdir(parents=True, exist_ok=True)
        template = resources.files("streamrec.localkafka").joinpath("pom.xml").read_text()
        pom_text = template.replace("@KAFKA@", self.config.version).replace("@SCALA@", self.config.scala)
        with tempfile.TemporaryDirectory(dir=libs.parent) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(pom_text)
            out = Path(tmp) / "libs"
            log.info("resolving Apache Kafka %s jars with Maven", self.config.version)
            proc = subprocess.run(
                [
                    self.config.maven,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                    f"-DoutputDirectory={out}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0 or not any(out.glob("kafka_*.jar")):
                raise LocalKafkaError(
                    f"Maven could not resolve org.apache.kafka:kafka_{self.config.scala}:"
                    f"{self.config.version} (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
                )
            if libs.exists():
                shutil.rmtree(libs)
            out.rename(libs)
        marker.write_text(self.config.version + "\n")
        return libs

    # ---- config and storage --------------------------------------------------------------
    def _listener_properties(self) -> list[str]:
        c = self.config
        cport = c.effective_controller_port
        if c.secure:
            return secure.listener_properties(self.secure_layout, c.host, c.port, cport, c.mtls_port, c.users)
        return [
            f"listeners=PLAINTEXT://{c.host}:{c.port},CONTROLLER://{c.host}:{cport}",
            f"advertised.listeners=PLAINTEXT://{c.host}:{c.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def _server_properties(self) -> str:
        c = self.config
        cport = c.effective_controller_port
        return "\n".join(
            [
                "# Written by streamrec: single-node KRaft (broker + controller), loopback only.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{c.host}:{cport}",
                *self._listener_properties(),
                f"log.dirs={self.data_dir}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=8",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        """Write a file only its owner can read (server.properties holds JAAS passwords when secure)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        if shutil.which(self.config.java) is None:
            raise LocalKafkaError(f"Java ({self.config.java!r}) is not on PATH: Kafka 4.x needs Java 17+")
        log4j = resources.files("streamrec.localkafka").joinpath("log4j2.properties")
        return [
            self.config.java,
            f"-Xms{self.config.heap}",
            f"-Xmx{self.config.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dstreamrec.kafka.log={self.log_file}",
            "-cp",
            str(self.libs_dir / "*"),
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _new_cluster_id(),
                "-c",
                str(self.properties_file),
                *(secure.format_arguments(self.secure_layout, self.config.users) if self.config.secure else []),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            if self.config.secure:
                for user in (secure.ADMIN_USER, secure.APP_USER):
                    output = output.replace(self.secure_layout.password(user), "***")
                for _, password in self.config.users:
                    output = output.replace(password, "***")
            raise LocalKafkaError(f"formatting KRaft storage in {self.data_dir} failed:\n{output}")

    # ---- lifecycle -----------------------------------------------------------------------
    def up(self) -> BrokerStatus:
        """Start the broker unless one already answers; wait until it does. Idempotent."""
        c = self.config
        pid = self._our_pid()
        if pid is None and self.pid_file.exists():
            log.warning("removing stale PID file %s", self.pid_file)
            self.pid_file.unlink(missing_ok=True)
        if pid is not None:
            self._wait_until_answering(pid)
            return self.status()
        if self._probe():
            log.info("a Kafka broker not started by streamrec already answers at %s; using it", c.bootstrap)
            return self.status()
        for port in (c.port, c.effective_controller_port, *((c.mtls_port,) if c.secure else ())):
            if _port_in_use(c.host, port):
                raise LocalKafkaError(
                    f"{c.host}:{port} is taken by something that is not a Kafka broker: "
                    "stop it or choose another port (--port / STREAMREC_KAFKA_PORT)"
                )
        self.resolve_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        if c.secure:
            secure.ensure_material(self.home, c.host)
        self._write_private(self.properties_file, self._server_properties())
        self._format_storage()
        out = (self.home / "kafka.out").open("ab")
        try:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.properties_file)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.home,
            )
        finally:
            out.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("started Apache Kafka %s (pid %d) at %s", c.version, proc.pid, c.bootstrap)
        try:
            self._wait_until_answering(proc.pid)
        except LocalKafkaError:
            self.down()
            raise
        return self.status()

    def _wait_until_answering(self, pid: int) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if self._probe(timeout=1.0):
                return
            if not _alive(pid):
                raise LocalKafkaError(
                    f"the Kafka broker (pid {pid}) exited during start-up; last lines of "
                    f"{self.log_file} / kafka.out:\n{self._log_tail()}"
                )
            time.sleep(0.25)
        raise LocalKafkaError(
            f"the Kafka broker (pid {pid}) did not answer at {self.config.bootstrap} within "
            f"{self.config.start_timeout_s:.0f} s; last log lines:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        text = ""
        for f in (self.log_file, self.home / "kafka.out"):
            with contextlib.suppress(OSError):
                text += "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def down(self) -> bool:
        """Stop our broker (SIGTERM, SIGKILL after ``stop_timeout_s``). False if none was running."""
        pid = self._our_pid()
        if pid is None:
            if self.pid_file.exists():
                log.warning("removing stale PID file %s", self.pid_file)
                self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            log.warning("Kafka (pid %d) did not stop within %.0f s; killing it", pid, self.config.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped Apache Kafka (pid %d)", pid)
        return True


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (we may be its parent and not have reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True
