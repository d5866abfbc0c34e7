"""An asyncio micro-batcher: concurrent ``await encode_async(texts)`` calls share one inference.

A collector task takes the first waiting request, then keeps collecting until the batch holds
``max_batch_size`` texts or ``max_wait_s`` has passed, and runs ``encoder.encode`` on the joined texts in a
thread pool (never on the event loop). While a batch runs, new requests queue up and form the next batch, so
batches grow with load. At most ``max_in_flight`` batches run at once.

Lifecycle is explicit: ``await start()`` … ``await stop()`` (or ``async with``). ``stop`` serves what is already
queued, waits for running batches, and shuts down the executor if the batcher created it. Every task it creates
is owned and awaited; nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from streamrec.encoders._base import TextEncoder, check_texts
from streamrec.encoders.errors import EncoderError

__all__ = ["BatcherStats", "MicroBatcher"]

logger = logging.getLogger(__name__)

_Request = tuple[list[str], "asyncio.Future[npt.NDArray[np.float32]]"]


@dataclass
class BatcherStats:
    """Counters for the streams layer: requests and texts received, batches run, their sizes."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    failed_batches: int = 0
    last_batch_size: int = 0
    max_batch_size_seen: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024), repr=False)  # recent


class MicroBatcher:
    def __init__(
        self,
        encoder: TextEncoder,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 10_000,
        max_in_flight: int = 1,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_in_flight < 1 or max_wait_s < 0:
            raise EncoderError("max_batch_size, max_queue and max_in_flight must be >= 1 and max_wait_s >= 0")
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self._executor = executor
        self._owns_executor = executor is None
        self._queue: asyncio.Queue[_Request | None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._closing = False
        self.stats = BatcherStats()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._collector.done()

    async def start(self) -> None:
        if self._collector is not None:
            raise EncoderError("MicroBatcher already started")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="encoder")
        self._queue = asyncio.Queue(self.max_queue)
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._closing = False
        self._collector = asyncio.create_task(self._collect(), name="encoder-microbatcher")

    async def stop(self) -> None:
        """Serve the queued requests, wait for running batches, release the executor if owned."""
        if self._collector is None or self._queue is None:
            return
        self._closing = True
        await self._queue.put(None)
        try:
            await self._collector
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            self._collector = None
            if self._owns_executor and self._executor is not None:
                self._executor.shutdown(wait=False)  # every batch has finished: nothing to wait for
                self._executor = None

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def encode_async(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Encode ``texts`` as part of a micro-batch; same contract as ``TextEncoder.encode``."""
        items = check_texts(texts)
        if self._queue is None or self._closing or not self.running:
            raise EncoderError("MicroBatcher is not running: call `await start()` first (and not after stop())")
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        fut: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, fut))
        self.stats.requests += 1
        self.stats.texts += len(items)
        return await fut

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first[0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                size += len(nxt[0])
            await self._slots.acquire()
            task = asyncio.create_task(self._run(batch), name="encoder-batch")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: list[_Request]) -> None:
        assert self._slots is not None
        try:
            texts = [t for items, _ in batch for t in items]
            self.stats.batches += 1
            self.stats.last_batch_size = len(texts)
            self.stats.max_batch_size_seen = max(self.stats.max_batch_size_seen, len(texts))
            self.stats.batch_sizes.append(len(texts))
            loop = asyncio.get_running_loop()
            try:
                vectors = await loop.run_in_executor(self._executor, self.encoder.encode, texts)
            except Exception as exc:
                self.stats.failed_batches += 1
                logger.warning("encoder batch of %d texts failed: %s", len(texts), exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            start = 0
            for items, fut in batch:
                end = start + len(items)
                if not fut.done():  # the caller may have been cancelled
                    fut.set_result(vectors[start:end].copy())
                start = end
        finally:
            self._slots.release()

