"""Keeping a worker honest about its health: no zombie workers, a bounded shutdown, a scrape that answers.

- :class:`ShutdownWatchdog`: once armed (SIGTERM/SIGINT, or a component failed), a daemon thread ends the
  process with ``os._exit`` if it is still alive after the deadline. A graceful stop that hangs (a Kafka
  call, Faust waiting for events that will never be acked) then still ends within the shutdown timeout;
  events that were not acked are processed again after the restart (at-least-once), nothing is lost.
- :class:`SupervisedWorker`: ``faust.Worker`` that arms the watchdog when a stop signal arrives.
- :class:`HealthServer`: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` from a
  threading HTTP server with a deep listen backlog, serving a cached rendering of the registry (rendered
  at most every ``max_age_s``, by the first request that finds it stale), so that concurrent scrapes of a
  busy worker cost one rendering, not one each, and never wait on the event loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

__all__ = ["HealthServer", "ShutdownWatchdog", "SupervisedWorker"]


class ShutdownWatchdog:
    """Ends the process ``timeout_s`` after :meth:`arm` unless it exited by itself first."""

    def __init__(self, exit: Callable[[int], Any] = os._exit) -> None:
        self._exit = exit
        self._armed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        return self._armed.is_set()

    def arm(self, timeout_s: float, exit_code: int, why: str) -> None:
        """Start the countdown (only the first call counts)."""
        with self._lock:
            if self._armed.is_set():
                return
            self._armed.set()
            self._thread = threading.Thread(
                target=self._countdown,
                args=(timeout_s, exit_code, why),
                name="streamrec-shutdown-watchdog",
                daemon=True,
            )
            self._thread.start()

    def _countdown(self, timeout_s: float, exit_code: int, why: str) -> None:
        time.sleep(timeout_s)
        log.critical(
            "%s, and the worker has not stopped after %.0f s: exiting now with code %d "
            "(events not yet acked are processed again after the restart)",
            why,
            timeout_s,
            exit_code,
        )
        logging.shutdown()
        self._exit(exit_code)


class SupervisedWorker(faust.Worker):
    """``faust.Worker`` whose graceful stop on SIGTERM/SIGINT is bounded by ``watchdog``."""

    def __init__(self, *args: Any, watchdog: ShutdownWatchdog, shutdown_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog
        self._shutdown_timeout_s = shutdown_timeout_s

    def _schedule_shutdown(self, signal: Any) -> None:  # mode.Worker: called by the SIGTERM/SIGINT handlers
        self._watchdog.arm(self._shutdown_timeout_s, 1, f"received {getattr(signal, 'name', signal)}")
        super()._schedule_shutdown(signal)

    async def start(self) -> None:
        """A SIGTERM/SIGINT during start-up stops the services that are still starting, and the start-up
        step they were in then fails (aiokafka's or Faust's internals torn down under it). That failure is the
        stop's consequence, not a crash: the worker stops cleanly (exit 0; nothing was acked yet)."""
        try:
            await super().start()
        except Exception as exc:
            if not self._signal_stop_time:
                raise
            self.log.warning("start-up interrupted by the stop signal (%r): stopping cleanly", exc)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog (the kernel caps it at net.core.somaxconn)
    allow_reuse_address = True


class HealthServer:
    """``/metrics``, ``/healthz`` (200 while ``healthy()``, else 503) and ``/readyz`` (200 while ``ready()``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        max_age_s: float = 0.5,
    ) -> None:
        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        self.max_age_s = max_age_s
        self._render_lock = threading.Lock()
        self._body = b""
        self._rendered_at = float("-inf")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        self._httpd: ThreadingHTTPServer = server_cls((host, port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def metrics_body(self) -> bytes:
        with self._render_lock:  # concurrent scrapes wait for one rendering and share it
            now = time.monotonic()
            if now - self._rendered_at >= self.max_age_s:
                self._body = generate_latest(self.registry)
                self._rendered_at = time.monotonic()
            return self._body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, server.metrics_body())
                elif path == "/healthz":
                    ok = server.healthy()
                    self._send(200 if ok else 503, "text/plain; charset=utf-8", b"ok\n" if ok else b"failed\n")
                elif path == "/readyz":
                    ok = server.ready()
                    self._send(200 if ok else 503, "text/plain; charset=utf-8", b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="streamrec-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
