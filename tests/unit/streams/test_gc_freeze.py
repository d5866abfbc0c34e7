"""The worker freezes its start-up objects out of full GC collections, once per process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamrec.streams.worker import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it was


@pytest.mark.usefixtures("unfrozen")
def test_start_up_objects_leave_the_collected_generations_once() -> None:
    survivor = [{"a": [1, 2]}]  # a container alive at start-up
    freeze_startup_objects()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert not any(o is survivor for o in gc.get_objects())  # full collections no longer walk it
    later = [{"b": [3]}]  # created after the freeze: still tracked and collected as usual
    assert any(o is later for o in gc.get_objects())
    freeze_startup_objects()  # a restarted agent: no second collection, nothing more frozen
    assert gc.get_freeze_count() == frozen
