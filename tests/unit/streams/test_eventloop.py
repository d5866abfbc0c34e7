"""``STREAMREC_EVENT_LOOP``: which loop the worker's command installs, and that a missing uvloop is a clear
configuration error only when it was asked for by name."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from streamrec.errors import ConfigError
from streamrec.streams.eventloop import use_event_loop
from streamrec.streams.settings import WorkerSettings

uvloop = pytest.importorskip("uvloop")


@pytest.fixture(autouse=True)
def _standard_policy_after() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


def _loop_type() -> type:
    loop = asyncio.new_event_loop()
    try:
        return type(loop)
    finally:
        loop.close()


def test_the_default_is_uvloop_where_it_is_installed() -> None:
    assert WorkerSettings().event_loop == "auto"
    assert use_event_loop("auto") == "uvloop"
    assert issubclass(_loop_type(), uvloop.Loop)
    assert asyncio.run(asyncio.sleep(0, "ran")) == "ran"  # asyncio.run (the owner's command) gets one too


def test_asyncio_keeps_the_standard_loop() -> None:
    use_event_loop("uvloop")
    assert use_event_loop("asyncio") == "asyncio"
    assert not issubclass(_loop_type(), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_by_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import of a missing module raises: ImportError
    assert use_event_loop("auto") == "asyncio"
    assert not issubclass(_loop_type(), uvloop.Loop)
    with pytest.raises(ConfigError, match="pip install uvloop"):
        use_event_loop("uvloop")


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError):
        WorkerSettings(event_loop="trio")  # type: ignore[arg-type]
