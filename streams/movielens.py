"""MovieLens-100K as a catalogue and an event stream (for ``streamrec replay``). No Kafka here.

The files are parsed by :mod:`streamrec.movielens` (re-exported here); this module turns movies into
``items`` records (:func:`movie_item`: key and ``item_id`` = the MovieLens id, ``title``, ``category`` =
the genres, ``tags`` = the decade) and ratings into events.

Events, one per rating, in timestamp order (ties: user id, then item id), keyed by user id. The
rating decides the event type:

| rating | type          | share of ML-100K |
| ------ | ------------- | ---------------- |
| 5      | `purchase`    | 21.2 %           |
| 4      | `add_to_cart` | 34.2 %           |
| 3      | `click`       | 27.1 %           |
| 1, 2   | `view`        | 17.5 %           |

With ``search_fraction`` f > 0, a deterministic (seeded) fraction f of the ratings is preceded by a
synthetic ``search`` event of the same user whose query is one of the movie's genres plus up to two
words of its title, e.g. "comedy toy story" -- the user searched, then found the movie.

Each event carries ``event_id`` = "<prefix>:<user>:<item>" (":search" appended for searches; the
prefix defaults to "ml100k", a replay may set its own so that a second run is not taken for
re-deliveries), the extra fields ``orig_ts`` (the rating's epoch ms) and ``rating``, and ``ts`` =
the wall clock when it is sent (set by the replay, so end-to-end latency can be measured).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from streamrec.movielens import (
    N_ITEMS,
    N_RATINGS,
    N_USERS,
    Movie,
    MovieLensError,
    Rating,
    find_ml100k,
    load_movies,
    load_ratings,
    movie_titles,
)
from streamrec.streams.schemas import EventType, ItemRecord

__all__ = [
    "N_ITEMS",
    "N_RATINGS",
    "N_USERS",
    "Movie",
    "MovieLensError",
    "Rating",
    "ReplayEvent",
    "find_ml100k",
    "load_movies",
    "load_ratings",
    "movie_item",
    "movie_titles",
    "rating_to_type",
    "replay_events",
    "schedule_offsets_s",
]


def movie_item(movie: Movie) -> ItemRecord:
    """The ``items`` record of a movie."""
    return ItemRecord(movie.item_id, movie.title, category=movie.category, tags=movie.tags)


def rating_to_type(rating: float) -> EventType:
    """5 -> purchase, 4 -> add_to_cart, 3 -> click, below 3 -> view (see the module docstring)."""
    if rating >= 5:
        return EventType.PURCHASE
    if rating >= 4:
        return EventType.ADD_TO_CART
    if rating >= 3:
        return EventType.CLICK
    return EventType.VIEW


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One event to send. ``payload(ts_ms)`` is its value with ``ts`` = the send time."""

    user_id: str
    type: EventType
    item_id: str
    query: str | None
    event_id: str
    orig_ts_ms: int
    rating: float

    @property
    def key(self) -> bytes:
        return self.user_id.encode()

    def payload(self, ts_ms: int) -> bytes:
        doc: dict[str, object] = {"user_id": self.user_id, "type": self.type.value}
        if self.type is EventType.SEARCH:
            doc["query"] = self.query
        else:
            doc["item_id"] = self.item_id
        doc.update(ts=ts_ms, event_id=self.event_id, orig_ts=self.orig_ts_ms, rating=self.rating)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_STOP = {"the", "a", "an", "of", "and", "in", "on", "to", "for", "la", "le", "les", "de", "il", "with"}


def _search_query(movie: Movie, rng: random.Random) -> str:
    words = [w for w in re.findall(r"[a-z0-9']+", movie.title.lower()) if w not in _STOP and not w.isdigit()]
    genres = [g for g in movie.genres if g != "unknown"]
    parts = [rng.choice(genres).lower()] if genres else []
    if words:
        start = rng.randrange(len(words))
        parts.extend(words[start : start + 2])
    return " ".join(parts) or movie.title.lower()


def replay_events(
    ratings: Sequence[Rating],
    movies: Sequence[Movie],
    *,
    limit: int = 0,
    users: int = 0,
    search_fraction: float = 0.0,
    seed: int = 0,
    id_prefix: str = "ml100k",
) -> Iterator[ReplayEvent]:
    """The event stream, in rating-timestamp order: at most ``limit`` events (0: all); only the
    ``users`` lowest user ids (0: all); a seeded ``search_fraction`` of ratings preceded by a search."""
    if not 0.0 <= search_fraction <= 1.0:
        raise MovieLensError(f"search_fraction must be in [0, 1], not {search_fraction}")
    by_id = {m.item_id: m for m in movies}
    keep: set[str] | None = None
    if users > 0:
        keep = {str(u) for u in sorted({int(r.user_id) for r in ratings})[:users]}
    rng = random.Random(seed)
    sent = 0
    for r in ratings:
        if keep is not None and r.user_id not in keep:
            continue
        orig_ms = r.ts_s * 1000
        movie = by_id.get(r.item_id)
        if search_fraction > 0 and movie is not None and rng.random() < search_fraction:
            if limit and sent >= limit:
                return
            query = _search_query(movie, rng)
            yield ReplayEvent(
                r.user_id,
                EventType.SEARCH,
                r.item_id,
                query,
                f"{id_prefix}:{r.user_id}:{r.item_id}:search",
                orig_ms,
                r.rating,
            )
            sent += 1
        if limit and sent >= limit:
            return
        yield ReplayEvent(
            r.user_id,
            rating_to_type(r.rating),
            r.item_id,
            None,
            f"{id_prefix}:{r.user_id}:{r.item_id}",
            orig_ms,
            r.rating,
        )
        sent += 1


def schedule_offsets_s(events: Sequence[ReplayEvent], *, rate: float = 0.0, speedup: float = 0.0) -> list[float]:
    """Open-loop send times, seconds after the start: event i at i / rate, or at its original time
    offset / speedup; all zero (as fast as possible) with neither. Never depends on answers."""
    if rate > 0 and speedup > 0:
        raise MovieLensError("give a rate or a speed-up, not both")
    if rate > 0:
        return [i / rate for i in range(len(events))]
    if speedup > 0 and events:
        t0 = events[0].orig_ts_ms
        return [(e.orig_ts_ms - t0) / 1000.0 / speedup for e in events]
    return [0.0] * len(events)
