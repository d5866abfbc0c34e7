"""The Faust application: the events agent, the session table, the output topics.

The agent does as little as possible on the consumer path: it takes each event (``noack``: Faust
must not ack it yet) and hands it to the :class:`~streamrec.streams.batcher.EventBatcher`. The hot
path processes micro-batches, produces the recommendations / dead letters through Faust's producer
and only then acks the events. Faust commits an offset only once every earlier event of the
partition is acked, and flushes its producer before every commit -- so offsets are committed only
after the output they caused was produced (at-least-once).

Session state lives in a Faust table (RocksDB store + Kafka changelog topic
``<app_id>-sessions-changelog``), with raw bytes values (our JSON codec; never pickle). Tables are
partitioned like the events topic: a worker owns the state of the users on its partitions, and
the state moves with the partitions on a rebalance (restored from the changelog).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import aiokafka
import faust
from faust.streams import _current_event  # private: see set_current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT

log = logging.getLogger(__name__)


class _FetchTunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the broker-side fetch wait that faust-streaming 0.15 fixes at
    ``fetch_max_wait_ms=1500`` / ``fetch_min_bytes=1`` set from the app (:func:`build_faust_app`).

    With ``fetch_min_bytes=1`` the broker answers a fetch as soon as one record is there, so under a steady
    stream the consumer thread runs one fetch round trip per record or two, and in Python each costs as much
    as processing several events (at 500 events/s it used ~0.23 of a core, and Faust's hand-off on the
    event loop as much again). With a minimum the broker holds the fetch until that many bytes are there
    or ``fetch_max_wait_ms`` has passed: at most one round trip per wait, each carrying what arrived
    meanwhile, for at most ``fetch_max_wait_ms`` more latency. :class:`FetchPolicy` decides when to hold.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        fetch: tuple[int, int] | None = getattr(self.app, "streamrec_fetch", None)
        if fetch is not None:
            # aiokafka (0.14) reads these when ``start()`` builds its Fetcher, which Faust calls next
            consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = fetch
        return consumer

    def set_fetch(self, wait_ms: int, min_bytes: int) -> bool:
        """Change the fetch settings of the running consumer: its next fetch request uses them (aiokafka's
        Fetcher reads both attributes whenever it builds a request). Called from the worker's event loop; two
        int assignments, which the fetcher on this thread's loop reads whole. False if not started yet."""
        consumer = self._consumer
        if consumer is None:
            return False
        consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = wait_ms, min_bytes
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None:
            return False
        fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = wait_ms, min_bytes
        return True


#: Faust's own fetch settings: the broker answers on the first record and holds a fetch up to 1.5 s when quiet
EAGER_FETCH = (1500, 1)


class FetchPolicy:
    """When to hold the events consumer's fetches at the broker.

    A held fetch (``wait_ms``, ``min_bytes``) comes back at most every ``wait_ms`` with what arrived meanwhile,
    so it saves round trips only while at least one record arrives per wait; on a quiet stream it would poll
    every ``wait_ms`` for nothing (~0.05 of a core at 5 ms) and add up to ``wait_ms`` to every event, where an
    eager fetch (:data:`EAGER_FETCH`) costs one round trip per record and adds nothing. So: hold from one
    event per wait on (200 events/s at 5 ms), go back to eager below half of that (hysteresis).
    """

    def __init__(self, wait_ms: int, min_bytes: int) -> None:
        if wait_ms < 1 or min_bytes < 1:  # a 0 ms wait: an idle consumer would fetch in a busy loop
            raise ValueError("the fetch wait and minimum must be >= 1")
        self.held = (wait_ms, min_bytes)
        self.holding = False

    def update(self, events: int, seconds: float) -> tuple[int, int] | None:
        """The settings to switch to after ``events`` arrived in ``seconds``; None: keep the current ones."""
        if seconds <= 0 or self.held == EAGER_FETCH:
            return None
        per_wait = events / seconds * self.held[0] / 1000
        if not self.holding and per_wait >= 1.0:
            self.holding = True
            return self.held
        if self.holding and per_wait < 0.5:
            self.holding = False
            return EAGER_FETCH
        return None


def set_events_fetch(app: faust.App, wait_ms: int, min_bytes: int) -> bool:
    """The events consumer's fetch settings from now on: recorded for a consumer Faust creates later, and set
    on the running one. True if a running consumer's fetcher took them now."""
    app.streamrec_fetch = (wait_ms, min_bytes)  # type: ignore[attr-defined]
    thread = getattr(app.consumer, "_thread", None)
    return isinstance(thread, _FetchTunedConsumerThread) and thread.set_fetch(wait_ms, min_bytes)


class _FetchTunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _FetchTunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _FetchTunedConsumer


class StreamrecApp(faust.App):
    """A Faust app whose worker consumer fetches with ``streamrec_fetch`` = (max wait ms, min bytes)."""

    streamrec_fetch: tuple[int, int] | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def set_current_event(event: EventT[Any] | None) -> None:
    """Make ``event`` the event that Faust's table operations refer to.

    Faust finds the partition of a table write (and the RocksDB database of a read) through a
    context variable holding the stream's current event; batched processing has to set it per
    event. This mirrors ``Stream._set_current_event`` (faust-streaming 0.15); covered by the
    integration tests, which fail if Faust changes it.
    """
    _current_event.set(None if event is None else weakref.ref(event))


def build_faust_app(
    *,
    app_id: str,
    bootstrap: str,
    data_dir: Path,
    partitions: int,
    commit_interval_s: float = 1.0,
    producer_linger_ms: int = 0,
    group_instance_id: str | None = None,
    session_timeout_s: float = 10.0,
    credentials: Any = None,
) -> faust.App:
    """The worker's Faust app.

    ``credentials``: Faust's ``broker_credentials`` (see :meth:`KafkaSecurity.faust_credentials`).

    ``group_instance_id`` (static group membership, KIP-345): a restarted worker with the same id takes its
    old place in the consumer group at once; without it, the group waits for the killed member's session to
    expire (``session_timeout_s``; Faust's default of 60 s made a restart wait ~57 s) before anyone gets its
    partitions. The session timeout also bounds how long a crashed worker's partitions stay unserved when it
    does not come back; heartbeats run on the event loop every 3 s, which is never blocked for long.

    Its events consumer starts with Faust's fetch settings; :func:`set_events_fetch` changes them.
    """
    brokers = [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]
    return StreamrecApp(
        app_id,
        broker=brokers,
        broker_credentials=credentials,
        store="rocksdb://",
        datadir=str(data_dir),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_allow_declare=True,
        producer_acks=-1,
        producer_linger=producer_linger_ms / 1000,
        broker_commit_interval=commit_interval_s,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        table_standby_replicas=1,
        consumer_group_instance_id=group_instance_id,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
    )


def sessions_table(app: faust.App, partitions: int) -> Any:
    return app.Table(
        "sessions",
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        default=None,
        help="per-user session state (JSON bytes, see streamrec.streams.session)",
    )
