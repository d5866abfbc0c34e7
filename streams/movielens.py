"""MovieLens-100K as a catalogue and an event stream (for ``streamrec replay``). No Kafka here.

Data: the copy packaged with ``recbole`` (``recbole/dataset_example/ml-100k/ml-100k.item`` and
``.inter``: 1,682 movies, 100,000 ratings by 943 users, tab-separated with typed headers such as
``item_id:token``). It is found with ``importlib.util.find_spec("recbole")`` WITHOUT importing
recbole (which imports torch). F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015.

Items: key and ``item_id`` = the MovieLens id; ``title`` = "<title> (<year>)" with a trailing
article moved to the front ("Usual Suspects, The" -> "The Usual Suspects (1995)"); ``category`` =
the genres joined with ", "; ``tags`` = the decade (e.g. "1990s").

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

import importlib.util
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import StreamrecError
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
    "movie_titles",
    "rating_to_type",
    "replay_events",
    "schedule_offsets_s",
]

N_ITEMS, N_RATINGS, N_USERS = 1_682, 100_000, 943


class MovieLensError(StreamrecError):
    """The MovieLens-100K files cannot be found or read."""


@dataclass(frozen=True, slots=True)
class Movie:
    item_id: str
    title: str  # display title with the year: "Toy Story (1995)"
    year: str
    genres: tuple[str, ...]

    def to_item(self) -> ItemRecord:
        tags = (f"{self.year[:3]}0s",) if len(self.year) == 4 and self.year.isdigit() else ()
        return ItemRecord(self.item_id, self.title, category=", ".join(self.genres) or None, tags=tags)


@dataclass(frozen=True, slots=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    ts_s: int


def find_ml100k() -> Path:
    """The ml-100k folder inside the installed recbole package (recbole is not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise MovieLensError("the 'recbole' package is not installed: pip install recbole (its data is used as is)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.item").is_file() and (folder / "ml-100k.inter").is_file():
            return folder
    where = list(spec.submodule_search_locations)
    raise MovieLensError(f"recbole is installed but has no dataset_example/ml-100k in {where}")


def _rows(path: Path) -> tuple[list[str], Iterator[list[str]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MovieLensError(f"cannot read {path}: {exc}") from None
    if not lines:
        raise MovieLensError(f"{path} is empty")
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    return header, (line.split("\t") for line in lines[1:] if line)


_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<article>The|A|An)$")


def _display_title(raw: str, year: str) -> str:
    m = _ARTICLE.match(raw.strip())
    title = f"{m['article']} {m['rest']}" if m else raw.strip()
    return f"{title} ({year})" if year else title


def load_movies(folder: Path | None = None) -> list[Movie]:
    """All movies, in file order (ids "1".."1682")."""
    path = (folder or find_ml100k()) / "ml-100k.item"
    header, rows = _rows(path)
    try:
        i_id, i_title, i_year, i_class = (header.index(c) for c in ("item_id", "movie_title", "release_year", "class"))
    except ValueError:
        raise MovieLensError(f"{path}: unexpected header {header}") from None
    movies = []
    for row in rows:
        year = row[i_year].strip() if len(row) > i_year else ""
        genres = tuple(row[i_class].split()) if len(row) > i_class else ()
        movies.append(Movie(row[i_id], _display_title(row[i_title], year), year, genres))
    return movies


def movie_titles(folder: Path | None = None) -> dict[str, str]:
    """``{item_id: display title}``."""
    return {m.item_id: m.title for m in load_movies(folder)}


def load_ratings(folder: Path | None = None) -> list[Rating]:
    """All ratings in timestamp order (ties: user id, then item id, numerically)."""
    path = (folder or find_ml100k()) / "ml-100k.inter"
    header, rows = _rows(path)
    try:
        i_u, i_i, i_r, i_t = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
        ratings = [Rating(r[i_u], r[i_i], float(r[i_r]), int(float(r[i_t]))) for r in rows]
    except (ValueError, IndexError) as exc:
        raise MovieLensError(f"{path}: cannot parse ({exc})") from None
    ratings.sort(key=lambda r: (r.ts_s, int(r.user_id), int(r.item_id)))
    return ratings


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
            yield ReplayEvent(r.user_id, EventType.SEARCH, r.item_id, query,
                              f"{id_prefix}:{r.user_id}:{r.item_id}:search", orig_ms, r.rating)
            sent += 1
        if limit and sent >= limit:
            return
        yield ReplayEvent(r.user_id, rating_to_type(r.rating), r.item_id, None,
                          f"{id_prefix}:{r.user_id}:{r.item_id}", orig_ms, r.rating)
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
