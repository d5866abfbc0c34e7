"""Micro-batching between the Kafka consumer loop and the hot path.

The consumer loop ``put``s events into a bounded queue (backpressure: ``put`` waits when the hot path
falls behind). One owned task takes up to ``max_batch`` events -- everything already queued, plus
whatever arrives within ``linger_s`` of the first one -- and awaits ``process(batch)``; batches are
processed one at a time, in arrival order, so per-key order is kept. Under load batches grow by
themselves (events queue while the previous batch is processed); at low rates an event waits at
most ``linger_s``.

If ``process`` raises, the batcher stops and the next ``put`` (or ``stop``) re-raises that error in
the consumer loop: a failing hot path crashes the worker loudly instead of silently dropping events
(their offsets were never acked, so they are processed again after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatcherStopped(StreamrecError):
    """``put`` after ``stop``."""


class EventBatcher(Generic[T]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 64,
        linger_s: float = 0.001,
        queue_max: int = 1024,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or queue_max < 1 or linger_s < 0:
            raise ValueError("max_batch and queue_max must be >= 1 and linger_s >= 0")
        self._process = process
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=queue_max)
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._stopping = False
        self.name = name
        self.batches = 0
        self.items = 0

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the batch task, or None."""
        return self._error

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def put(self, item: T) -> None:
        self._raise_if_failed()
        task = self._task
        if self._stopping or task is None:
            raise BatcherStopped(f"{self.name} is not running")
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        # Backpressure: wait for room, unless the batch task dies meanwhile (then raise its error).
        waiter = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            self._raise_if_failed()
            raise BatcherStopped(f"{self.name} stopped while waiting for room")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def stop(self, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop taking events; with ``drain``, finish what is queued first (graceful shutdown)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if drain and self._error is None:
            drained = asyncio.ensure_future(self._queue.join())
            await asyncio.wait({drained, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._raise_if_failed()

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = [await queue.get()]
                deadline = loop.time() + self.linger_s
                while len(batch) < self.max_batch:
                    if not queue.empty():
                        batch.append(queue.get_nowait())
                        continue
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
                await self._process(batch)
                self.batches += 1
                self.items += len(batch)
                for _ in batch:
                    queue.task_done()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("%s: processing a batch failed; stopping", self.name)
            self._error = exc
