"""The worker's side of ``STREAMREC_COVISIT_OWNER=process``: start one ``streamrec covisit-owner`` child, count
what it reports, restart it when it dies, give up when it keeps dying.

The child (:mod:`streamrec.streams.covisit_owner`) gets the worker's settings as ``STREAMREC_*`` variables
(exactly the settings in force, flags included; a password file stays a file), its own session and so its own
process group (a terminal's Ctrl-C reaches the worker only, which stops the child in order; a session rather than
``process_group=0``, which uvloop's subprocesses do not take), a stdin pipe the worker never
writes to (end-of-file = the worker is gone, even after SIGKILL) and a stdout pipe carrying one JSON line of
cumulative counters about every second (:class:`~streamrec.streams.covisit_owner.OwnerStats`), which the worker
adds to its own Prometheus counters; a line that is not one is logged and ignored. Its logs go to the worker's
stderr. No pickle, no multiprocessing queues: a pipe of text lines.

An unexpected exit is restarted after a backoff (0.5 s, doubling to 10 s; back to 0.5 s after a child that ran
longer than the failure window) and counted; ``max_failures`` exits within ``failure_window_s`` set
:attr:`OwnerProcess.error`, which the worker treats like any failed component (exit status 1). Restarting loses
nothing: the new child re-merges the deltas its predecessor had not committed (see
:mod:`streamrec.streams.covisit_sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from streamrec.errors import StreamrecError
from streamrec.streams.covisit_owner import OwnerStats, parse_stats_line
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.settings import WorkerSettings

__all__ = ["OwnerProcess", "OwnerProcessError", "owner_command", "settings_environment"]

log = logging.getLogger(__name__)


class OwnerProcessError(StreamrecError):
    """The co-visitation owner process kept exiting: see its log lines (in the worker's log) for why."""


def settings_environment(settings: BaseSettings) -> dict[str, str]:
    """``STREAMREC_*`` variables that rebuild ``settings`` exactly (fields set to None are left out)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"{prefix}{name}".upper()] = text
    return env


def owner_command(log_level: str | int) -> list[str]:
    """The child's command line: this interpreter, this streamrec."""
    level = log_level if isinstance(log_level, str) else logging.getLevelName(log_level)
    return [sys.executable, "-m", "streamrec.cli", "--log-level", level, "covisit-owner", "--supervised"]


class OwnerProcess:
    """One supervised owner child (module docstring). ``start``, then ``stop``; check :attr:`error`."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        on_stats: Callable[[OwnerStats], None],
        on_restart: Callable[[], None] | None = None,
        max_failures: int = 5,
        failure_window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.on_stats = on_stats
        self.on_restart = on_restart
        self.max_failures = max_failures
        self.failure_window_s = failure_window_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self.malformed = 0
        self.error: BaseException | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_worker(
        cls, settings: WorkerSettings, metrics: WorkerMetrics, serve_socket: str | None = None
    ) -> OwnerProcess:
        """The child of a worker with ``settings``: its counters go to the worker's ``metrics``; with
        ``serve_socket``, it also scores the worker's co-visitation candidates there
        (:mod:`streamrec.streams.covisit_serve`)."""

        def on_stats(d: OwnerStats) -> None:
            metrics.covisit_deltas.labels("merged").inc(d.merged)
            metrics.covisit_published.inc(d.published)
            metrics.covisit_invalid.labels("deltas").inc(d.invalid_deltas)
            metrics.covisit_invalid.labels("rows").inc(d.invalid_rows)

        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        argv = owner_command(logging.getLogger().getEffectiveLevel())
        if serve_socket is not None:
            argv += ["--serve-socket", serve_socket]
        return cls(
            argv,
            {**inherited, **settings_environment(settings)},
            on_stats=on_stats,
            on_restart=metrics.covisit_owner_restarts.inc,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="covisit-owner-process")

    async def _supervise(self) -> None:
        exits: deque[float] = deque()
        delay = self.backoff_s
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                status = await self._run_once()
                if self._stopping.is_set():
                    break
                now = time.monotonic()
                ran_s = now - started
                exits.append(now)
                while exits and now - exits[0] > self.failure_window_s:
                    exits.popleft()
                if ran_s > self.failure_window_s:
                    delay = self.backoff_s
                if len(exits) >= self.max_failures:
                    self.error = OwnerProcessError(
                        f"the co-visitation owner process exited {len(exits)} times within "
                        f"{self.failure_window_s:.0f} s (last exit status {status}): see its log lines above"
                    )
                    log.critical("%s", self.error)
                    return
                log.error(
                    "the co-visitation owner process exited unexpectedly (status %s after %.1f s): restart in %.1f s",
                    status,
                    ran_s,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(2 * delay, self.max_backoff_s)
                if not self._stopping.is_set():
                    self.restarts += 1
                    if self.on_restart is not None:
                        self.on_restart()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("supervising the co-visitation owner process failed")
            self.error = exc

    async def _run_once(self) -> int:
        """Start the child, count its stats lines until its stdout closes, return its exit status."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        self.proc = proc
        log.info("co-visitation owner process started (pid %d)", proc.pid)
        if self._stopping.is_set():  # stop() came while it was starting
            proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        seen = OwnerStats()
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError as exc:  # longer than the reader's limit (the buffer was discarded)
                self._malformed(b"", exc)
                continue
            if not line:
                break
            try:
                stats = parse_stats_line(line)
            except ValueError as exc:
                self._malformed(line, exc)
                continue
            self.on_stats(stats.since(seen))
            seen = stats
        return await proc.wait()

    def _malformed(self, line: bytes, why: Exception) -> None:
        self.malformed += 1
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning(
                "ignored a line from the co-visitation owner process that is not a stats line (%d so far): %s: %r",
                self.malformed,
                why,
                line[:200],
            )

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the child (it publishes what it merged, commits and leaves the group) and wait for it, at most
        ``timeout_s`` (then SIGKILL: what it had not committed is merged again by the next owner). Returns its
        exit status (None if none was running)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            log.error("the co-visitation owner process did not stop within %.0f s: killing it", timeout_s)
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10.0)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return self.proc.returncode if self.proc is not None else None
