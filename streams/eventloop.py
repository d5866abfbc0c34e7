"""The event loop a worker (and its co-visitation owner process) runs on: uvloop by default.

A worker's event loop carries Faust's consumer hand-offs, aiokafka's fetch and produce requests, the Kafka
client's socket reads and writes, the micro-batches' futures and the recommendations' sends: per event,
dozens of callbacks, futures and socket calls, all under the one GIL the hot path's pool threads also need.
uvloop (libuv, the loop of Node.js, in Cython) runs the same asyncio API with less Python per callback and
per socket operation; Faust supports it (``faust -L uvloop``). Measured end to end (``streamrec bench``,
``benchmarks/README.md``, "uvloop as the worker's event loop"; 10 alternating pairs on a 2-core VM): less
worker CPU per event under load (lower in 9 of the 10 pairs at 1,500 events/s, equal in one), more events
answered per second by one worker (median 1,312 against 1,088 at 1,500 offered) and a lower p99 at 500 events/s
in 7 of the 10 pairs.

``auto`` (the default) uses uvloop where it is installed (a dependency on Linux and macOS) and asyncio's own
loop otherwise (Windows); ``uvloop`` insists on it; ``asyncio`` keeps the standard loop. Set before any
loop exists: the worker's command sets it first, and its owner child inherits the setting.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Literal

from streamrec.errors import ConfigError

__all__ = ["EventLoopKind", "use_event_loop"]

log = logging.getLogger(__name__)

EventLoopKind = Literal["auto", "uvloop", "asyncio"]


def use_event_loop(kind: EventLoopKind) -> str:
    """Make the loops this process creates from now on ``kind``'s; returns the one in use ("uvloop" or
    "asyncio"). Raises :class:`ConfigError` for ``uvloop`` when it cannot be imported."""
    if kind == "asyncio":
        asyncio.set_event_loop_policy(None)  # the standard policy
        return "asyncio"
    if kind not in ("auto", "uvloop"):
        raise ConfigError(f"unknown event loop {kind!r}: auto, uvloop or asyncio")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError(
                f"STREAMREC_EVENT_LOOP=uvloop but uvloop cannot be imported ({exc}): pip install uvloop, "
                "or set STREAMREC_EVENT_LOOP=auto"
            ) from None
        log.info("uvloop is not installed: running on asyncio's own event loop")
        asyncio.set_event_loop_policy(None)
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
