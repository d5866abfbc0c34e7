"""The event log an evaluation replays: events in time order plus the item catalogue.

Two sources:

* :func:`movielens_log` -- MovieLens-100K from the installed ``recbole`` package, one event per rating
  (rating -> event type as in :mod:`streamrec.streams.movielens`), ``ts`` = the rating's ORIGINAL time, so
  every decay acts on MovieLens time. No synthetic searches: the replay's searches are built from the next
  movie's title and genres, which would hand a text-based recommender the answer.
* :func:`jsonl_log` -- the user's own JSON Lines files: one ``events`` message per line and one ``items``
  message per line, exactly the schemas of the topics (README "Messages"). Every event needs ``ts`` (a log
  without times cannot be replayed causally). Lines that the worker would dead-letter are skipped and
  counted by reason, never fatal; a later line of the same ``item_id`` replaces an earlier one.

Events are sorted by ``ts``, stably: events with the same time keep their file order (MovieLens: user, then
item). Per user, that is the order a worker sees them in (one user = one partition).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.errors import StreamrecError
from streamrec.streams.movielens import load_movies, load_ratings, movie_item, replay_events
from streamrec.streams.schemas import (
    Event,
    EventType,
    InvalidMessage,
    ItemDeletion,
    ItemRecord,
    decode_event,
    decode_item,
)

__all__ = ["EvaluationDataError", "EventLog", "jsonl_log", "movielens_log"]

log = logging.getLogger(__name__)


class EvaluationDataError(StreamrecError):
    """The event log cannot be read or has nothing to evaluate."""


@dataclass(frozen=True)
class EventLog:
    """Time-ordered ``events`` and the ``items`` catalogue (available or not), with where they came from."""

    name: str
    events: list[Event]
    items: list[ItemRecord]
    source: dict[str, object] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> lines skipped

    @property
    def users(self) -> list[str]:
        return list(dict.fromkeys(e.user_id for e in self.events))

    @property
    def catalogue(self) -> list[str]:
        """The item ids that may be recommended (available ones), in catalogue order."""
        return [i.item_id for i in self.items if i.available]

    def describe(self) -> str:
        skipped = sum(self.skipped.values())
        extra = f"; {skipped} lines skipped ({dict(self.skipped)})" if skipped else ""
        return (
            f"{self.name}: {len(self.events):,} events of {len(self.users):,} users, "
            f"{len(self.catalogue):,} items{extra}"
        )


def _sample_users(users: list[str], n: int, seed: int) -> set[str]:
    return set(random.Random(seed).sample(users, n)) if 0 < n < len(users) else set(users)


def movielens_log(*, users: int = 0, max_events: int = 0, seed: int = 0) -> EventLog:
    """MovieLens-100K: all 943 users (or ``users`` sampled with ``seed``), each user's first ``max_events``
    ratings (0: all)."""
    movies, ratings = load_movies(), load_ratings()
    everyone = sorted({r.user_id for r in ratings}, key=int)
    chosen = _sample_users(everyone, users, seed)
    taken: Counter[str] = Counter()
    kept = []
    for r in ratings:
        if r.user_id in chosen and (max_events <= 0 or taken[r.user_id] < max_events):
            taken[r.user_id] += 1
            kept.append(r)
    events = [
        Event(e.user_id, e.type, e.item_id, None, e.orig_ts_ms, e.event_id)
        for e in replay_events(kept, movies, search_fraction=0.0, id_prefix="ml100k")
    ]
    if not events:
        raise EvaluationDataError("no MovieLens events selected (users / max_events too small?)")
    source: dict[str, object] = {
        "dataset": "MovieLens-100K (recbole/dataset_example/ml-100k)",
        "users": users or "all",
        "max_events_per_user": max_events or "all",
        "seed": seed,
    }
    return EventLog("MovieLens-100K", events, [movie_item(m) for m in movies], source)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, line.rstrip(b"\r\n")
    except OSError as exc:
        raise EvaluationDataError(f"cannot read {path}: {exc}") from None


def jsonl_log(events_path: Path, items_path: Path) -> EventLog:
    """The user's events and items (JSON Lines, our message schemas); see the module docstring."""
    skipped: Counter[str] = Counter()
    items: dict[str, ItemRecord] = {}
    for number, line in _lines(items_path):
        try:
            doc = json.loads(line)
            key = doc.get("item_id") if isinstance(doc, dict) else None
            item = decode_item(key.encode() if isinstance(key, str) else None, line)
        except (InvalidMessage, ValueError) as exc:
            skipped[f"items:{getattr(exc, 'reason', 'invalid_json')}"] += 1
            if sum(skipped.values()) <= 5:
                log.warning("skipped %s:%d: %s", items_path, number, exc)
            continue
        if isinstance(item, ItemDeletion):  # decode_item never returns one for a non-null value
            continue
        items[item.item_id] = item
    events: list[Event] = []
    for number, line in _lines(events_path):
        try:
            events.append(decode_event(line, record_ts_ms=-1, topic=events_path.name, partition=0, offset=number))
        except InvalidMessage as exc:
            skipped[f"events:{exc.reason}"] += 1
            if sum(skipped.values()) <= 5:
                log.warning("skipped %s:%d: %s", events_path, number, exc)
    if not items:
        raise EvaluationDataError(f"{items_path}: no valid item (one JSON object per line, README 'Messages')")
    if not any(e.item_id is not None and e.type is not EventType.SEARCH for e in events):
        raise EvaluationDataError(f"{events_path}: no valid event that names an item")
    events.sort(key=lambda e: e.ts_ms)  # stable: ties keep file order
    source: dict[str, object] = {"events": str(events_path), "items": str(items_path)}
    return EventLog(events_path.stem, events, list(items.values()), source, dict(skipped))
