"""The worker's Faust app: its events consumer fetches with the broker-side wait the settings give."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamrec.streams.faust_app import build_faust_app
from streamrec.streams.settings import WorkerSettings


def _fetch_of(tmp_path: Path, **kwargs: int) -> tuple[int, int]:
    """(fetch_max_wait_ms, fetch_min_bytes) of the aiokafka consumer Faust's consumer thread would start."""

    async def build() -> tuple[int, int]:
        app = build_faust_app(app_id="t", bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1, **kwargs)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            # what aiokafka's start() hands to its Fetcher
            return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_the_events_consumer_fetches_with_the_configured_wait(tmp_path: Path) -> None:
    assert _fetch_of(tmp_path, fetch_max_wait_ms=7, fetch_min_bytes=4096) == (7, 4096)


def test_without_a_configured_wait_it_is_fausts_own(tmp_path: Path) -> None:
    assert _fetch_of(tmp_path) == (1500, 1)


def test_the_worker_defaults_hold_a_fetch_briefly_for_more_records() -> None:
    s = WorkerSettings()
    assert 0 < s.consumer_fetch_max_wait_ms <= 10  # bounded extra latency when the stream is quiet
    assert s.consumer_fetch_min_bytes > 1


def test_invalid_fetch_settings_are_refused(tmp_path: Path) -> None:
    for bad in ({"fetch_max_wait_ms": 0}, {"fetch_max_wait_ms": 5, "fetch_min_bytes": 0}):
        with pytest.raises(ValueError):
            build_faust_app(app_id="t", bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1, **bad)
    with pytest.raises(ValueError):
        WorkerSettings(consumer_fetch_max_wait_ms=0)
