"""``ensure_topics`` waits for a topic it just created to appear in the broker's metadata (a starved broker
took more than 10 s once), and gives up with a clear error, without waiting for topics it did not create."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from streamrec.streams import topics
from streamrec.streams.topics import TopicError, TopicSpec, ensure_topics

UNKNOWN = topics.UNKNOWN_TOPIC_OR_PARTITION


class FakeAdmin:
    """The admin calls ``ensure_topics`` makes; ``describe_topics`` answers from a script of error codes."""

    def __init__(self, existing: list[str], describe_errors: list[int]) -> None:
        self.existing = existing
        self.describe_errors = list(describe_errors)  # one error code per describe call; 0 once they run out
        self.created: list[str] = []
        self.describes = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return list(self.existing)

    async def create_topics(self, new: list[Any]) -> Any:
        self.created += [t.name for t in new]
        return SimpleNamespace(topic_errors=[(t.name, 0, None) for t in new])

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self.describes += 1
        code = self.describe_errors.pop(0) if self.describe_errors else 0
        return [{"topic": n, "error_code": code, "partitions": [] if code else [{}, {}, {}]} for n in names]


def _run(monkeypatch: pytest.MonkeyPatch, admin: FakeAdmin, specs: list[TopicSpec]) -> dict[str, int]:
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", lambda **_: admin)
    return asyncio.run(ensure_topics("127.0.0.1:1", specs))


def test_a_created_topic_is_waited_for_until_the_metadata_lists_it(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin([], [UNKNOWN, UNKNOWN, topics.LEADER_NOT_AVAILABLE])
    assert _run(monkeypatch, admin, [TopicSpec("events", 3)]) == {"events": 3}
    assert admin.created == ["events"]
    assert admin.describes == 4


def test_a_created_topic_that_never_appears_is_an_error_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "CREATED_WAIT_S", 1.0)
    admin = FakeAdmin([], [UNKNOWN] * 1000)
    t0 = time.monotonic()
    with pytest.raises(TopicError, match=r"'events' is not available 1 s after it was created \(error 3\)"):
        _run(monkeypatch, admin, [TopicSpec("events", 3)])
    assert 1.0 <= time.monotonic() - t0 < 5.0
    assert admin.describes >= 3  # retried, every 0.2 s


def test_topics_that_existed_are_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin(["events"], [UNKNOWN] * 1000)
    with pytest.raises(TopicError, match=r"'events' is not available \(error 3\)"):
        _run(monkeypatch, admin, [TopicSpec("events", 3)])
    assert admin.created == []
    assert admin.describes == 1
