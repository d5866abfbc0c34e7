"""Scoring the co-visitation candidates in the owner process, off the worker's GIL.

A worker is one Python process: its event loop (Kafka, Faust, the replicas, publishing) and its hot path's batch
step share one interpreter lock, and at a high event rate that lock, not the CPU, is what runs out (a GIL
profile of a worker at 500 events/s: the co-visitation scoring alone held it ~12 % of the time). The owner
process the worker supervises (:mod:`streamrec.streams.covisit_supervisor`) already replicates every published
row (:class:`~streamrec.streams.covisit_sync.CovisitReplica`), has its own interpreter and is idle most of the
time, so it scores too (``STREAMREC_COVISIT_SERVING=owner``, the default with an owner process):

- the child listens on a Unix socket in a directory only the worker's user can enter (:class:`ScoreServer`),
  once its replica has caught up with the rows topic;
- the hot path's :class:`RemoteScorer` sends a batch's users (their recent items, the first ``sources`` only) in
  ONE request and gets back each user's ``fetch_for(depth)`` best candidates, unfiltered; it applies the user's
  exclusions itself (:func:`~streamrec.streams.covisit.pick`: the same rule, on the same over-fetched list, as
  local scoring), so nothing user-specific beyond the recent items leaves the worker;
- the step waits in its pool thread, the interpreter lock released, while the loop runs on;
- when the child does not answer (not started yet, restarting, slower than ``timeout_s``, a malformed answer)
  the batch is scored locally on the worker's own replica, as without this, and counted
  (``streamrec_covisit_scored_total{by="local"}``); reconnecting is retried after a backoff. Lists never wait
  for the child longer than ``timeout_s``.

Both sides serve the rows of the same compacted topic, each from its own replica: they may differ by a
replication delay (milliseconds), as two workers' replicas do.

Wire (little-endian, each message prefixed by its u32 length; ids as in :mod:`~streamrec.streams.covisit_wire`)::

    request:  u8 1 | f64 now_s | u32 fetch | u32 U | u32 count[U] | u32 len[C] | utf8 ids      (C = sum count)
    response: u8 1 | u32 U | u32 count[U] | u32 len[C] | utf8 ids | f64 score[C]

Every size is checked against the message (``ValueError``); a frame over ``MAX_FRAME`` bytes is refused. No
pickle: ids and numbers only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from streamrec.streams.covisit import CovisitGraph, fetch_for, pick
from streamrec.streams.covisit_wire import _F64, _U32, _pack, _pack_ids, _Reader

__all__ = [
    "MAX_FRAME",
    "MAX_SOCKET_PATH",
    "LocalScorer",
    "RemoteScorer",
    "ScoreServer",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "new_serve_dir",
    "sweep_stale_serve_dirs",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSION = 1
MAX_SOCKET_PATH = 100  # bytes: sockaddr_un holds 104-108 by platform, NUL included
SERVE_DIR_PREFIX = "streamrec-covisit-"  # + "<worker pid>-<random>": whose it was, after a crash
SOCKET_NAME = "scores.sock"


def new_serve_dir(root: str | None = None) -> str:
    """A new directory only this user can enter (``mkdtemp``: mode 0700) for the scoring socket, named after this
    process; first removes what workers that were killed left behind (:func:`sweep_stale_serve_dirs`)."""
    root = root or tempfile.gettempdir()
    removed = sweep_stale_serve_dirs(root)
    if removed:
        log.info("covisit scoring: removed %d socket directories of workers that are gone", removed)
    return tempfile.mkdtemp(prefix=f"{SERVE_DIR_PREFIX}{os.getpid()}-", dir=root)


def sweep_stale_serve_dirs(root: str) -> int:
    """Remove the socket directories that killed workers left in ``root`` (a graceful stop removes its own; SIGKILL
    or the OOM killer cannot): only directories named by :func:`new_serve_dir`, owned by this user, whose worker
    process no longer exists, holding nothing but the socket. Returns how many were removed."""
    removed = 0
    uid = os.getuid()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        rest = entry.name[len(SERVE_DIR_PREFIX) :] if entry.name.startswith(SERVE_DIR_PREFIX) else ""
        pid_text, dash, _ = rest.partition("-")
        if not dash or not pid_text.isdigit():  # not ours (or an older version's, without a pid: left alone)
            continue
        pid = int(pid_text)
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or pid == os.getpid() or _alive(pid):
                continue
            if set(os.listdir(entry.path)) - {SOCKET_NAME}:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.exists(entry.path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


MAX_FRAME = 64 * 1024 * 1024  # a batch of 256 users x 12 ids or x 70 candidates is ~100-500 KB
_LEN = struct.Struct("<I")
_REQ_HEAD = struct.Struct("<BdII")
_RESP_HEAD = struct.Struct("<BI")


# ---------------------------------------------------------------------------------------------- wire
def encode_request(now_s: float, fetch: int, recents: Sequence[Sequence[str]]) -> bytes:
    flat = [j for r in recents for j in r]
    return b"".join(
        (_REQ_HEAD.pack(VERSION, now_s, fetch, len(recents)), _pack(_U32, [len(r) for r in recents]), *_pack_ids(flat))
    )


def decode_request(data: bytes) -> tuple[float, int, list[list[str]]]:
    """``(now_s, fetch, recents)``; ``ValueError`` on anything else."""
    r = _Reader(data)
    version, now_s, fetch, users = r.unpack(_REQ_HEAD)
    if version != VERSION:
        raise ValueError(f"covisit scoring request version {version} is not {VERSION}")
    counts = r.array(_U32, users)
    flat = r.ids(sum(counts))
    r.end()
    if not math.isfinite(now_s):
        raise ValueError("a non-finite time")
    return now_s, fetch, _split(flat, counts)


def encode_response(ranked: Sequence[tuple[Sequence[str], Sequence[float]]]) -> bytes:
    ids = [j for names, _ in ranked for j in names]
    scores = [s for _, values in ranked for s in values]
    return b"".join(
        (
            _RESP_HEAD.pack(VERSION, len(ranked)),
            _pack(_U32, [len(names) for names, _ in ranked]),
            *_pack_ids(ids),
            _pack(_F64, scores),
        )
    )


def decode_response(data: bytes, users: int) -> list[tuple[list[str], list[float]]]:
    """Per user ``(ids, scores)``, best first; ``ValueError`` unless it is an answer for ``users`` users."""
    r = _Reader(data)
    version, n = r.unpack(_RESP_HEAD)
    if version != VERSION or n != users:
        raise ValueError(f"covisit scoring answer (version {version}, {n} users) for a request of {users} users")
    counts = r.array(_U32, n)
    total = sum(counts)
    ids = r.ids(total)
    scores = list(r.array(_F64, total))
    r.end()
    if not all(map(math.isfinite, scores)):
        raise ValueError("a non-finite score")
    return list(zip(_split(ids, counts), _split(scores, counts), strict=True))


def _split(flat: list[T], counts: Sequence[int]) -> list[list[T]]:
    """``flat`` cut into consecutive runs of ``counts``."""
    out: list[list[T]] = []
    at = 0
    for c in counts:
        out.append(flat[at : at + c])
        at += c
    return out


def _frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a {len(payload)}-byte message is over the {MAX_FRAME}-byte limit")
    return _LEN.pack(len(payload)) + payload


# ---------------------------------------------------------------------------------------------- server (owner)
class ScoreServer:
    """Answers scoring requests from the graph of the owner process's replica, on that process's event loop
    (a request of a batch is a few ms; the owner's and the replica's steps are ~1 ms each). One connection per
    worker; requests on it are answered in order."""

    def __init__(self, graph: CovisitGraph, path: str) -> None:
        self.graph = graph
        self.path = path
        self.served = 0  # users scored
        self.invalid = 0  # malformed requests (their connection is closed)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # a previous child's socket
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._handle, path=self.path)
        os.chmod(self.path, 0o600)
        log.info("covisit scoring served on %s", self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
                if size > MAX_FRAME:
                    raise ValueError(f"a {size}-byte request is over the {MAX_FRAME}-byte limit")
                now_s, fetch, recents = decode_request(await reader.readexactly(size))
                ranked = self.graph.ranked_many(recents, now_s, fetch)
                self.served += len(recents)
                writer.write(_frame(encode_response(ranked)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker closed its end (it stopped, or gave up on a slow answer), or this server stopped
        except ValueError as exc:  # struct.error and UnicodeDecodeError are ValueErrors too
            self.invalid += 1
            log.warning("covisit scoring: a malformed request, connection closed: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in list(self._writers):  # the workers' connections too: they score locally meanwhile
                writer.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


# ---------------------------------------------------------------------------------------------- client (worker)
class LocalScorer:
    """``scores_many`` of the worker's own replica, counted (``on_scored("local", users)``)."""

    def __init__(self, local: CovisitGraph, on_scored: Callable[[str, int], object] | None = None) -> None:
        self.local = local
        self.on_scored = on_scored

    def scores_many(
        self, users: Sequence[tuple[Sequence[str], Collection[str]]], now_s: float, limit: int | None = None
    ) -> list[dict[str, float]]:
        if self.on_scored is not None and users:
            self.on_scored("local", len(users))
        return self.local.scores_many(users, now_s, limit)


class RemoteScorer:
    """``scores_many`` of :class:`~streamrec.streams.covisit.CovisitGraph`, scored by the owner process when it
    answers, else by ``local`` (module docstring). Called from the hot path's thread; blocking, with a timeout."""

    def __init__(
        self,
        path: str,
        local: CovisitGraph,
        *,
        timeout_s: float = 0.25,
        retry_s: float = 0.5,
        max_retry_s: float = 10.0,
        on_scored: Callable[[str, int], object] | None = None,
    ) -> None:
        self.path = path
        self.local = local
        self.config = local.config
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.on_scored = on_scored  # ("owner" | "local", users)
        self.failures = 0  # connections dropped (not counting refused connects)
        self._sock: socket.socket | None = None
        self._next_try = 0.0
        self._backoff = retry_s
        self._lock = threading.Lock()

    def scores_many(
        self, users: Sequence[tuple[Sequence[str], Collection[str]]], now_s: float, limit: int | None = None
    ) -> list[dict[str, float]]:
        if users and limit is not None:
            with self._lock:
                ranked = self._ask(users, now_s, fetch_for(limit))
            if ranked is not None:
                self._count("owner", len(users))
                return [
                    pick(ids, scores, limit, exclude) for (ids, scores), (_, exclude) in zip(ranked, users, strict=True)
                ]
        self._count("local", len(users))
        return self.local.scores_many(users, now_s, limit)

    def _ask(
        self, users: Sequence[tuple[Sequence[str], Collection[str]]], now_s: float, fetch: int
    ) -> list[tuple[list[str], list[float]]] | None:
        sock = self._connected()
        if sock is None:
            return None
        sources = self.config.sources
        deadline = time.monotonic() + self.timeout_s
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(_frame(encode_request(now_s, fetch, [recent[:sources] for recent, _ in users])))
            (size,) = _LEN.unpack(_recv_exactly(sock, _LEN.size, deadline))
            if size > MAX_FRAME:
                raise ValueError(f"a {size}-byte answer is over the {MAX_FRAME}-byte limit")
            ranked = decode_response(_recv_exactly(sock, size, deadline), len(users))
        except (OSError, ValueError) as exc:  # socket.timeout is an OSError
            self._drop(exc)
            return None
        self._backoff = self.retry_s
        return ranked

    def _connected(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._next_try:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.path)
        except OSError:  # not listening yet (the owner's replica is catching up), or restarting
            sock.close()
            self._next_try = now + self.retry_s
            return None
        self._sock = sock
        log.info("covisit scoring: connected to the owner process (%s)", self.path)
        return sock

    def _drop(self, exc: BaseException) -> None:
        self.failures += 1
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._next_try = time.monotonic() + self._backoff
        log.warning(
            "covisit scoring: the owner process did not answer (%r); scoring locally, retrying in %.1f s",
            exc,
            self._backoff,
        )
        self._backoff = min(self.max_retry_s, 2 * self._backoff)

    def _count(self, by: str, users: int) -> None:
        if self.on_scored is not None and users:
            self.on_scored(by, users)

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    """``size`` bytes by ``deadline`` (``time.monotonic()``), else ``TimeoutError``."""
    buf = bytearray()
    while len(buf) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        sock.settimeout(left)
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the owner process closed the connection")
        buf += chunk
    return bytes(buf)
