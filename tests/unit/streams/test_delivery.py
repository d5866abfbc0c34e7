"""Waiting for many deliveries (an owner's flush, a benchmark step): every one awaited, the first failure (in send
order) raised, and the failures of the rest still retrieved -- none reported by asyncio as "never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from streamrec.streams.delivery import all_delivered


async def test_every_delivery_is_awaited() -> None:
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(5)]
    for k, fut in enumerate(reversed(futs)):  # delivered in reverse order
        loop.call_later(0.001 * (k + 1), fut.set_result, k)
    assert await all_delivered(futs) == [4, 3, 2, 1, 0]  # in their order, whenever each came


async def test_the_first_failure_is_raised_and_the_later_ones_are_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        futs = [loop.create_future() for _ in range(4)]
        futs[0].set_result(None)
        futs[1].set_exception(RuntimeError("row 1 not delivered"))
        futs[2].set_exception(RuntimeError("row 2 not delivered"))  # failed already
        loop.call_later(0.01, futs[3].set_exception, RuntimeError("row 3 not delivered"))  # fails later
        with pytest.raises(RuntimeError, match="row 1"):
            await all_delivered(futs)
        await asyncio.sleep(0.05)  # row 3 fails meanwhile
        assert futs[3].done()
        del futs
        gc.collect()
        await asyncio.sleep(0)
        assert not reported, reported
    finally:
        loop.set_exception_handler(None)


async def test_without_the_followers_a_later_failure_would_be_reported() -> None:
    """The check above can fail: a failed future nobody retrieves is reported when collected."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        fut = loop.create_future()
        fut.set_exception(RuntimeError("never retrieved"))
        del fut
        gc.collect()
        await asyncio.sleep(0)
        assert reported and "never retrieved" in str(reported[0].get("exception"))
    finally:
        loop.set_exception_handler(None)
