from __future__ import annotations

import asyncio

import pytest

from streamrec.streams.batcher import BatcherStopped, EventBatcher


async def test_batches_keep_order_and_respect_max() -> None:
    seen: list[list[int]] = []

    async def process(batch: list[int]) -> None:
        seen.append(batch)
        await asyncio.sleep(0.01)

    b: EventBatcher[int] = EventBatcher(process, max_batch=8, linger_s=0.0, queue_max=100)
    await b.start()
    for i in range(50):
        await b.put(i)
    await b.stop(drain=True)
    assert [x for batch in seen for x in batch] == list(range(50))
    assert max(len(batch) for batch in seen) <= 8
    assert len(seen) < 50  # events queued during a batch were coalesced
    assert b.items == 50


async def test_linger_coalesces_events_arriving_shortly_after() -> None:
    seen: list[list[int]] = []

    async def process(batch: list[int]) -> None:
        seen.append(batch)

    b: EventBatcher[int] = EventBatcher(process, max_batch=64, linger_s=0.05)
    await b.start()
    for i in range(5):
        await b.put(i)
        await asyncio.sleep(0.002)
    await b.stop()
    assert seen == [[0, 1, 2, 3, 4]]


async def test_failure_surfaces_in_put_even_when_the_queue_is_full() -> None:
    async def process(batch: list[int]) -> None:
        raise ValueError("boom")

    b: EventBatcher[int] = EventBatcher(process, max_batch=1, linger_s=0.0, queue_max=2)
    await b.start()
    with pytest.raises(ValueError, match="boom"):
        for i in range(100):
            await asyncio.wait_for(b.put(i), 2.0)
    with pytest.raises(ValueError, match="boom"):
        await b.stop()


async def test_put_after_stop_is_refused() -> None:
    async def process(batch: list[int]) -> None:
        return None

    b: EventBatcher[int] = EventBatcher(process)
    await b.start()
    await b.stop()
    with pytest.raises(BatcherStopped):
        await b.put(1)
