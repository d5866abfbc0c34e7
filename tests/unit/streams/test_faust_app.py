"""The worker's Faust app: its events consumer fetches with the broker-side wait the settings give."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamrec.streams.faust_app import EAGER_FETCH, FetchPolicy, build_faust_app, set_events_fetch
from streamrec.streams.settings import WorkerSettings


def _fetch_of(tmp_path: Path, fetch: tuple[int, int] | None = None) -> tuple[int, int]:
    """(fetch_max_wait_ms, fetch_min_bytes) of the aiokafka consumer Faust's consumer thread would start, after
    ``set_events_fetch(*fetch)`` on the app before it is started."""

    async def build() -> tuple[int, int]:
        app = build_faust_app(app_id="t", bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1)
        if fetch is not None:
            assert not set_events_fetch(app, *fetch)  # no running consumer: recorded for the one it starts
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            # what aiokafka's start() hands to its Fetcher
            return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_the_events_consumer_fetches_with_the_configured_wait(tmp_path: Path) -> None:
    assert _fetch_of(tmp_path, (7, 4096)) == (7, 4096)


def test_without_a_configured_wait_it_is_fausts_own(tmp_path: Path) -> None:
    assert _fetch_of(tmp_path) == (1500, 1)


def test_the_worker_defaults_hold_a_fetch_briefly_for_more_records() -> None:
    s = WorkerSettings()
    assert 0 < s.consumer_fetch_max_wait_ms <= 10  # bounded extra latency when the stream is quiet
    assert s.consumer_fetch_min_bytes > 1


def test_invalid_fetch_settings_are_refused() -> None:
    for bad in ((0, 65536), (5, 0)):
        with pytest.raises(ValueError):
            FetchPolicy(*bad)
    with pytest.raises(ValueError):
        WorkerSettings(consumer_fetch_max_wait_ms=0)


def test_fetches_are_held_only_while_a_held_fetch_carries_a_record() -> None:
    policy = FetchPolicy(5, 65536)
    assert not policy.holding
    assert policy.update(100, 1.0) is None  # 100/s: 0.5 events per 5 ms -- eager fetches cost no more
    assert policy.update(200, 1.0) == (5, 65536)  # 1 per wait: hold
    assert policy.holding
    assert policy.update(150, 1.0) is None  # between half and one per wait: no flapping
    assert policy.update(99, 1.0) == EAGER_FETCH  # quiet again: eager, no 5 ms polling for nothing
    assert policy.update(0, 0.0) is None
    assert FetchPolicy(*EAGER_FETCH).update(10_000, 1.0) is None  # Faust's own settings: nothing to switch


def test_a_running_consumer_switches_its_fetch_settings(tmp_path: Path) -> None:
    async def run() -> None:
        app = build_faust_app(app_id="t", bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1)
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:

            class Fetcher:  # what aiokafka's start() builds; its requests read these two attributes
                _fetch_max_wait_ms, _fetch_min_bytes = EAGER_FETCH

            consumer._fetcher = Fetcher()
            thread._consumer = consumer
            assert set_events_fetch(app, 7, 1024)
            assert (consumer._fetcher._fetch_max_wait_ms, consumer._fetcher._fetch_min_bytes) == (7, 1024)
            assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (7, 1024)
        finally:
            thread._consumer = None
            consumer._fetcher = None  # never started: nothing of aiokafka's to close
            await consumer.stop()

    asyncio.run(run())
