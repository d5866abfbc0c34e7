"""Session fixtures shared by all tests.

Integration tests talk to a real Apache Kafka broker: the session fixture ``kafka`` reuses one that
answers on ``STREAMREC_KAFKA_HOST:STREAMREC_KAFKA_PORT`` (default 127.0.0.1:9092), or starts one with
the project's own :class:`streamrec.localkafka.LocalKafka` and stops it when the session ends
(``STREAMREC_TEST_KEEP_KAFKA=1`` leaves it running). Each test gets its own topics and consumer
groups (uuid names) from ``new_topic`` / ``new_group``; its topics are deleted afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.testing import KafkaForTests, create_topics, delete_topics, start_broker, unique_name


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaForTests]:
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "streamrec"
    broker = start_broker(
        os.environ.get("STREAMREC_KAFKA_HOST", "127.0.0.1"),
        int(os.environ.get("STREAMREC_KAFKA_PORT", "9092")),
        state,
    )
    yield broker
    if os.environ.get("STREAMREC_TEST_KEEP_KAFKA") != "1":
        broker.stop_if_started_here()


@pytest.fixture
def new_group() -> Callable[[str], str]:
    return lambda prefix="group": unique_name(f"test-{prefix}")


@pytest.fixture
def new_topic(kafka: KafkaForTests) -> Iterator[Callable[..., str]]:
    """``new_topic("events", partitions=3)``: a fresh topic, deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(f"test-{prefix}")
        create_topics(kafka.bootstrap, {name: partitions}, config)
        created.append(name)
        return name

    yield make
    delete_topics(kafka.bootstrap, created)


@pytest.fixture(scope="session")
def exported_model() -> Path:
    """The exported encoder (``STREAMREC_TEST_MODEL_DIR`` or the user's cache; exported once if missing)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from streamrec.commands.export import default_model_dir
    from streamrec.export.testing import ensure_exported_model

    given = os.environ.get("STREAMREC_TEST_MODEL_DIR")
    return ensure_exported_model(Path(given) if given else default_model_dir())


@pytest.fixture(scope="session")
def model_dir(exported_model: Path) -> Path:
    """The encoder and export tests' name for :func:`exported_model`."""
    return exported_model
