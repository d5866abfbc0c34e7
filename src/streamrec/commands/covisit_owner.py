"""``streamrec covisit-owner``: the co-visitation owner as its own process (the learning side of the signal).

A worker starts one itself by default (``STREAMREC_COVISIT_OWNER=process``, with ``--supervised``); with
``STREAMREC_COVISIT_OWNER=external`` the workers run none and this command runs on its own (e.g. its own
deployment), with the workers' ``STREAMREC_*`` settings. Any number may run: they share the deltas partitions
through the consumer group ``<app_id>-covisit``. SIGTERM/SIGINT stop it gracefully (publish, commit, leave).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from typing import BinaryIO

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError
from streamrec.streams.eventloop import use_event_loop
from streamrec.streams.settings import WorkerSettings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "covisit-owner",
        help="run the co-visitation owner: merge row deltas, publish the changed rows (the signal's learner)",
        description=__doc__,
    )
    p.add_argument(
        "--supervised",
        action="store_true",
        help="run as a worker's child: counters as JSON lines on stdout, stop at end-of-file on stdin",
    )
    p.add_argument(
        "--serve-socket",
        metavar="PATH",
        help="also score co-visitation candidates for a worker on this Unix socket (its worker passes it)",
    )
    add_settings_arguments(p, WorkerSettings)
    p.set_defaults(func=run)


async def preflight(s: WorkerSettings) -> None:
    """Connect (fail fast), create/describe the signal's topics, check this process's ACLs."""
    from streamrec.commands.worker import covisit_specs
    from streamrec.streams.acls import Need, Operation, ResourceType, check_permissions
    from streamrec.streams.security import check_connection
    from streamrec.streams.topics import ensure_topics

    security = s.kafka_security()
    await check_connection(s.bootstrap, security)
    specs = covisit_specs(s)
    await ensure_topics(s.bootstrap, specs, create=s.create_topics, security=security)
    deltas, rows = (spec.name for spec in specs)
    t = ResourceType.TOPIC
    await check_permissions(
        s.bootstrap,
        security,
        [
            Need(ResourceType.GROUP, f"{s.app_id}-covisit", Operation.READ, "the co-visitation owners' group"),
            Need(t, deltas, Operation.READ, "the row deltas it merges"),
            Need(t, rows, Operation.READ, "the published rows it starts from"),
            Need(t, rows, Operation.WRITE, "the rows it publishes"),
        ],
    )


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop at end-of-file on stdin: the parent closed it, or died (even by SIGKILL)."""

    def wait_eof() -> None:
        with open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) as stdin:
            while stdin.read(4096):
                pass
        log.info("stdin closed (the worker that started this owner is gone): stopping")
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()


def _stats_channel() -> BinaryIO:
    """The stats lines get stdout's pipe to themselves; anything else printed to stdout goes to stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


async def _main(settings: WorkerSettings, supervised: bool, serve_socket: str | None = None) -> int:
    from streamrec.streams.covisit_owner import OwnerStats, StandaloneOwner, install_stop_signals

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_signals(loop, stop)
    stats_out = None
    if supervised:
        _watch_stdin(loop, stop)
        channel = _stats_channel()

        def stats_out(stats: OwnerStats) -> None:
            try:
                channel.write(stats.to_line())
            except OSError:  # BrokenPipeError: the parent is gone
                stop.set()

    await preflight(settings)
    return await StandaloneOwner(settings, stats_out=stats_out, serve_socket=serve_socket).run(stop)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(WorkerSettings, args)
    if not settings.covisit:
        raise ConfigError("the co-visitation signal is off (STREAMREC_COVISIT=false): there is nothing to own")
    log.info("event loop: %s", use_event_loop(settings.event_loop))
    return asyncio.run(_main(settings, bool(args.supervised), args.serve_socket))
