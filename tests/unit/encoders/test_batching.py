"""MicroBatcher: coalescing, bounds, runs off the loop, errors, lifecycle."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest

from streamrec.encoders import EncoderError, MicroBatcher


class SlowEncoder:
    dim = 4
    name = "slow"

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(texts))
        time.sleep(self.delay)  # blocking, as ONNX inference is
        if self.fail:
            raise RuntimeError("inference exploded")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0] = float(len(t))
            out[i, 1] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


async def test_concurrent_requests_are_coalesced() -> None:
    enc = SlowEncoder()
    async with MicroBatcher(enc, max_batch_size=64, max_wait_s=0.01) as batcher:
        results = await asyncio.gather(*(batcher.encode_async(["x" * i]) for i in range(1, 21)))
    assert sum(len(b) for b in enc.batches) == 20
    assert len(enc.batches) <= 3  # 20 concurrent callers, far fewer inferences
    assert batcher.stats.requests == 20 and batcher.stats.max_batch_size_seen >= 10
    for i, r in enumerate(results, start=1):  # each caller gets its own rows
        expected = enc_row(i)
        np.testing.assert_allclose(r[0], expected, atol=1e-6)


def enc_row(length: int) -> npt.NDArray[np.float32]:
    v = np.array([length, 1.0, 0.0, 0.0], dtype=np.float32)
    return v / np.linalg.norm(v)


async def test_batch_size_is_bounded() -> None:
    enc = SlowEncoder(delay=0.005)
    async with MicroBatcher(enc, max_batch_size=4, max_wait_s=0.05) as batcher:
        await asyncio.gather(*(batcher.encode_async([f"t{i}"]) for i in range(10)))
    assert max(len(b) for b in enc.batches) <= 4
    assert sum(len(b) for b in enc.batches) == 10


async def test_a_request_larger_than_the_batch_runs_alone() -> None:
    enc = SlowEncoder(delay=0.0)
    async with MicroBatcher(enc, max_batch_size=4) as batcher:
        out = await batcher.encode_async([f"t{i}" for i in range(9)])
    assert out.shape == (9, 4)


async def test_inference_runs_off_the_event_loop() -> None:
    enc = SlowEncoder(delay=0.1)
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async with MicroBatcher(enc, max_wait_s=0.0) as batcher:
        t = asyncio.create_task(ticker())
        try:
            await batcher.encode_async(["hello"])
        finally:
            t.cancel()
    assert loop_thread not in enc.threads
    assert ticks >= 5  # the loop kept running during the 100 ms inference


async def test_max_wait_bounds_latency_of_a_lone_request() -> None:
    enc = SlowEncoder(delay=0.0)
    async with MicroBatcher(enc, max_batch_size=1000, max_wait_s=0.02) as batcher:
        t0 = time.perf_counter()
        await batcher.encode_async(["alone"])
        assert time.perf_counter() - t0 < 0.5


async def test_errors_reach_every_caller_in_the_batch_and_the_batcher_survives() -> None:
    enc = SlowEncoder(fail=True)
    async with MicroBatcher(enc, max_wait_s=0.01) as batcher:
        results = await asyncio.gather(*(batcher.encode_async(["a"]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert batcher.stats.failed_batches >= 1
        enc.fail = False
        assert (await batcher.encode_async(["b"])).shape == (1, 4)


async def test_bad_input_fails_only_its_caller() -> None:
    async with MicroBatcher(SlowEncoder(delay=0.0)) as batcher:
        with pytest.raises(EncoderError):
            await batcher.encode_async("a string")
        assert (await batcher.encode_async([])).shape == (0, 4)
        assert (await batcher.encode_async(["ok"])).shape == (1, 4)


async def test_lifecycle() -> None:
    batcher = MicroBatcher(SlowEncoder(delay=0.0))
    with pytest.raises(EncoderError, match="start"):
        await batcher.encode_async(["x"])
    await batcher.start()
    with pytest.raises(EncoderError, match="already started"):
        await batcher.start()
    assert batcher.running
    await batcher.stop()
    assert not batcher.running
    with pytest.raises(EncoderError):
        await batcher.encode_async(["x"])
    await batcher.stop()  # idempotent


async def test_stop_serves_what_is_queued() -> None:
    enc = SlowEncoder(delay=0.01)
    batcher = MicroBatcher(enc, max_batch_size=2, max_wait_s=0.0)
    await batcher.start()
    pending = [asyncio.create_task(batcher.encode_async([f"q{i}"])) for i in range(6)]
    await asyncio.sleep(0)  # let them enqueue
    await batcher.stop()
    results = await asyncio.gather(*pending)
    assert len(results) == 6 and all(r.shape == (1, 4) for r in results)


async def test_executor_passed_in_is_used_and_not_shut_down() -> None:
    enc = SlowEncoder(delay=0.0)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mine") as pool:
        async with MicroBatcher(enc, executor=pool) as batcher:
            await batcher.encode_async(["x"])
        assert pool.submit(lambda: 1).result() == 1  # still usable


async def test_bad_settings() -> None:
    with pytest.raises(EncoderError):
        MicroBatcher(SlowEncoder(), max_batch_size=0)
