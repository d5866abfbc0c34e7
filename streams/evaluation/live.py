"""The same evaluation end to end through Kafka: a real ``streamrec worker``, the log replayed into it, the
recommendation messages consumed and joined to the events they answer.

1. fresh topics and a fresh app id (consumer group, state) on the broker, so nothing of an earlier run leaks in;
2. the catalogue goes to the items topic FIRST, then the worker starts: it serves only once its index has caught
   up with the items topic, so every event meets the whole catalogue, as in the offline run;
3. the events are replayed with the replay's producing loop (:func:`streamrec.commands.replay.send_records`),
   keyed by user, each carrying its ORIGINAL ``ts`` and ``event_id`` (so every decay acts on the log's time, as
   offline), open loop at ``rate`` events/s;
4. a consumer reads the recommendations topic from the beginning until every event is answered (or the
   answers stop coming for ``idle_timeout_s``); each message is joined to its event by ``event_id`` (the first
   message per event counts; a re-delivery after a fault may send a second one, which is counted apart);
5. the worker is stopped (SIGTERM: drains and commits) and the topics are deleted.

Where it may differ from the offline run, and why: the worker's micro-batches are whatever arrives within its
linger (offline: fixed batches of the same maximum size); users on different partitions are interleaved as the
consumer fetches them, not strictly in log order (a user's own events keep their order); and what the
collaborative signal learns reaches the serving state through Kafka, later than offline where it is applied
after each batch. Session state, exclusions and the text signal are computed per event and do not depend on
any of that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.errors import StreamrecError
from streamrec.streams.evaluation.data import EventLog
from streamrec.streams.evaluation.offline import SystemResult
from streamrec.streams.evaluation.report import compare
from streamrec.streams.evaluation.scoring import EvalPoint, coverage, score_lists
from streamrec.streams.evaluation.suite import Evaluation
from streamrec.streams.schemas import InvalidMessage, decode_recommendation

__all__ = ["LiveConfig", "LiveRun", "LiveRunError", "agreement", "live_result", "run_live", "score_live_run"]

log = logging.getLogger(__name__)


class LiveRunError(StreamrecError):
    """The run through Kafka could not be done (no broker, the worker did not start or did not answer)."""


@dataclass(frozen=True)
class LiveConfig:
    bootstrap: str
    work_dir: Path  # the worker's data dir and log
    rate: float = 500.0  # events/s offered (0: as fast as the producer goes)
    partitions: int = 4
    items_partitions: int = 2
    worker_env: Mapping[str, str] = field(default_factory=dict)  # STREAMREC_* settings of the worker
    ready_timeout_s: float = 600.0
    idle_timeout_s: float = 60.0
    keep_topics: bool = False


@dataclass
class LiveRun:
    """What came back: the first list per ``event_id`` and how the run went."""

    lists: dict[str, list[str]]
    sent: int
    answered: int
    duplicates: int  # messages for an event already answered
    fallbacks: int
    undecodable: int
    strategies: dict[str, int]
    elapsed_s: float
    replay: dict[str, Any]
    topics: dict[str, str]
    worker_log: str

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lists"}


def _names() -> dict[str, str]:
    from streamrec.testing import unique_name

    return {
        "app_id": unique_name("evaluate"),
        "events_topic": unique_name("evaluate-events"),
        "items_topic": unique_name("evaluate-items"),
        "recommendations_topic": unique_name("evaluate-recs"),
        "dead_letter_topic": unique_name("evaluate-dlq"),
    }


async def _collect(
    bootstrap: str, topic: str, want: set[str], out: LiveRun, sending: asyncio.Task[Any], idle_timeout_s: float
) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    last_new = time.monotonic()
    try:
        while len(out.lists) < len(want):
            batch = await consumer.getmany(timeout_ms=500)
            before = len(out.lists)
            for records in batch.values():
                for r in records:
                    try:
                        rec = decode_recommendation(r.value)
                    except InvalidMessage:
                        out.undecodable += 1
                        continue
                    if rec.event_id in out.lists:
                        out.duplicates += 1
                        continue
                    out.lists[rec.event_id] = [item for item, _ in rec.items]
                    out.fallbacks += rec.fallback
                    name = rec.strategy or "?"
                    out.strategies[name] = out.strategies.get(name, 0) + 1
                    last_new = time.monotonic()
            if sending.done() and sending.exception() is not None:
                return
            if sending.done() and time.monotonic() - last_new > idle_timeout_s:
                log.warning(
                    "no recommendation for %.0f s: %d of %d events answered", idle_timeout_s, len(out.lists), len(want)
                )
                return
            if len(out.lists) // 10_000 > before // 10_000:
                log.info("%d / %d events answered", len(out.lists), len(want))
    finally:
        await consumer.stop()


async def _replay_and_collect(log_: EventLog, config: LiveConfig, names: dict[str, str], out: LiveRun) -> None:
    from streamrec.commands.replay import send_records

    events = [(e.user_id.encode(), _Fixed(e.to_json_bytes())) for e in log_.events]
    offsets = [i / config.rate for i in range(len(events))] if config.rate > 0 else [0.0] * len(events)
    started = time.monotonic()
    sending = asyncio.create_task(
        send_records(
            config.bootstrap,
            items_topic=names["items_topic"],
            items=[],
            events_topic=names["events_topic"],
            events=events,
            offsets=offsets,
        )
    )
    try:
        await _collect(
            config.bootstrap,
            names["recommendations_topic"],
            {e.event_id for e in log_.events},
            out,
            sending,
            config.idle_timeout_s,
        )
    finally:
        if not sending.done():
            sending.cancel()
        stats = await asyncio.gather(sending, return_exceptions=True)
    if isinstance(stats[0], BaseException):
        raise LiveRunError(f"replaying the events failed: {stats[0]!r}") from stats[0]
    out.sent = stats[0].events
    out.replay = {
        "events": stats[0].events,
        "elapsed_s": round(stats[0].elapsed_s, 2),
        "max_lag_behind_schedule_s": round(stats[0].max_lag_s, 3),
        "rate": config.rate,
    }
    out.elapsed_s = time.monotonic() - started


async def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    except Exception:  # cleanup only
        return []
    finally:
        await admin.close()


class _Fixed:
    """An event payload that is the same whatever the send time (the log's own ``ts`` is kept)."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __call__(self, now_ms: int) -> bytes:
        return self.value


def run_live(log_: EventLog, config: LiveConfig) -> LiveRun:
    """Run the log through a real worker on ``config.bootstrap`` (see the module docstring)."""
    from streamrec.commands.replay import send_records
    from streamrec.streams.topics import TopicSpec, ensure_topics
    from streamrec.testing import delete_topics, start_worker

    if len({e.event_id for e in log_.events}) != len(log_.events):
        raise LiveRunError(
            "event ids are not unique: the worker would take repeats for re-deliveries, and the "
            "answers could not be joined to their events (give every event its own event_id)"
        )
    names = _names()
    config.work_dir.mkdir(parents=True, exist_ok=True)
    worker_log = config.work_dir / "worker.log"
    out = LiveRun({}, 0, 0, 0, 0, 0, {}, 0.0, {}, names, str(worker_log))
    specs = [
        TopicSpec(names["items_topic"], config.items_partitions, (("cleanup.policy", "compact"),)),
        TopicSpec(names["events_topic"], config.partitions),
        TopicSpec(names["recommendations_topic"], config.partitions),
        TopicSpec(names["dead_letter_topic"], config.partitions),
    ]
    try:
        asyncio.run(ensure_topics(config.bootstrap, specs))
    except Exception as exc:
        raise LiveRunError(
            f"cannot create the topics on {config.bootstrap}: {exc} (is Kafka running? `streamrec kafka up`)"
        ) from exc
    worker = None
    try:
        items = [(i.item_id.encode(), i.to_json_bytes()) for i in log_.items]
        asyncio.run(
            send_records(
                config.bootstrap,
                items_topic=names["items_topic"],
                items=items,
                events_topic=names["events_topic"],
                events=[],
                offsets=[],
            )
        )
        env = {
            **config.worker_env,
            "STREAMREC_BOOTSTRAP": config.bootstrap,
            "STREAMREC_CREATE_TOPICS": "true",
            "STREAMREC_DATA_DIR": str(config.work_dir / "data"),
            "STREAMREC_PARTITIONS": str(config.partitions),
            **{f"STREAMREC_{k.upper()}": v for k, v in names.items()},
        }
        worker = start_worker(env, worker_log)
        worker.wait_until(
            lambda m: (
                m.get("streamrec_index_ready") == 1.0 and m.get("streamrec_index_items", 0) >= len(log_.catalogue)
            ),
            config.ready_timeout_s,
            "the catalogue indexed",
        )
        log.info(
            "worker ready (%d items); replaying %d events at %s/s",
            len(log_.catalogue),
            len(log_.events),
            config.rate or "max",
        )
        asyncio.run(_replay_and_collect(log_, config, names, out))
        out.answered = len(out.lists)
    except (TimeoutError, RuntimeError) as exc:
        raise LiveRunError(str(exc)) from exc
    finally:
        if worker is not None:
            code = worker.stop()
            if code != 0:
                log.warning("the worker exited with %d (log: %s)", code, worker_log)
        if not config.keep_topics:  # ours, and the worker's internal ones (named after its app id)
            internal = asyncio.run(_topics_with_prefix(config.bootstrap, names["app_id"]))
            delete_topics(config.bootstrap, [n for k, n in names.items() if k != "app_id"] + internal)
    return out


def live_result(
    log_: EventLog, points: Sequence[EvalPoint], run: LiveRun, *, k: int, name: str, params: dict[str, Any]
) -> SystemResult:
    """The messages' lists at the evaluation points (joined by ``event_id``; a missing answer is an empty list,
    a miss), scored exactly as offline."""
    lists = [run.lists.get(log_.events[p.position].event_id, []) for p in points]
    return SystemResult(
        name,
        "kafka",
        params,
        score_lists(lists, points, k),
        coverage(lists, k, len(log_.catalogue)),
        lists,
        0.0,
        run.elapsed_s,
        len(log_.events),
    )


def agreement(live: SystemResult, offline: SystemResult, *, k: int, rounds: int, seed: int) -> dict[str, Any]:
    """How closely the run through Kafka matches the offline run of the same recommender, point by point."""
    pairs = list(zip(live.lists, offline.lists, strict=True))
    return {
        "offline": offline.name,
        "points": len(pairs),
        "missing": sum(not a for a, _ in pairs),
        "identical_lists": sum(a[:k] == b[:k] for a, b in pairs) / len(pairs),
        "same_items": sum(set(a[:k]) == set(b[:k]) for a, b in pairs) / len(pairs),
        "mean_top_k_overlap": sum(len(set(a[:k]) & set(b[:k])) for a, b in pairs) / (len(pairs) * k),
        "kafka_minus_offline": compare(live, [offline], rounds=rounds, seed=seed)[offline.name],
    }


def score_live_run(
    ev: Evaluation, run: LiveRun, spec: str, *, params: dict[str, Any], k: int, rounds: int, seed: int
) -> dict[str, Any]:
    """Add the run's scores to ``ev`` as system ``kafka: <spec>`` and compare it with the offline ``spec``."""
    result = live_result(ev.log, ev.points, run, k=k, name=f"kafka: {spec}", params=params)
    out: dict[str, Any] = {"run": run.summary()}
    offline = next((r for r in ev.results if r.name == spec), None)
    if offline is not None:
        out["agreement"] = agreement(result, offline, k=k, rounds=rounds, seed=seed)
    ev.results.append(result)
    return out
