"""Turn a MovieLens release in CSV form into the two JSON Lines files ``streamrec evaluate`` reads.

The CSV releases (``ml-latest-small``, ``ml-latest``, ``ml-20m``, ``ml-25m``, ``ml-32m``) ship ``ratings.csv``
(``userId,movieId,rating,timestamp``, epoch seconds) and ``movies.csv`` (``movieId,title,genres``, genres
``|``-separated). Every rating becomes an event of its user, typed by its stars exactly as the built-in
MovieLens-100K is (:func:`streamrec.streams.movielens.rating_to_type`: 5 purchase, 4 add_to_cart, 3 click,
below view; half stars round down), in timestamp order with ties by user id then movie id (the built-in log's
order); ``event_id`` = ``<prefix><n>``, unique, so ``--kafka`` can join the recommendations back. Every movie
becomes an ``items`` record: its title, and its genres as the category ("(no genres listed)": none).

    python benchmarks/movielens_csv_to_jsonl.py ml-latest-small --out /tmp/mls
    streamrec evaluate --events /tmp/mls/events.jsonl --items /tmp/mls/items.jsonl

The README's third-log figures ("Recommendation quality") were made this way from ``ml-latest-small``
(GroupLens, research use: the data is not part of this repository; Harper & Konstan 2015).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from streamrec.streams.movielens import rating_to_type

_RATINGS = ("userId", "movieId", "rating", "timestamp")
_MOVIES = ("movieId", "title", "genres")
Rating = tuple[int, str, str, float]  # (epoch s, user id, movie id, stars)


def _id_key(value: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order (MovieLens' are integers), anything else after them, as text."""
    return (0, int(value)) if value.isdigit() else (1, value)


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV file whose header names ``columns`` (refused otherwise)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} in the header {reader.fieldnames}")
        yield from enumerate(reader, start=2)


def read_ratings(path: Path) -> list[Rating]:
    """Every rating of ``ratings.csv``, in timestamp order (ties: user id, then movie id)."""
    out: list[Rating] = []
    for n, row in _rows(path, _RATINGS):
        try:
            user, movie = row["userId"], row["movieId"]
            if not user or not movie:
                raise ValueError
            out.append((int(row["timestamp"]), user, movie, float(row["rating"])))
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{n}: not a userId,movieId,rating,timestamp line: {row}") from None
    out.sort(key=lambda r: (r[0], _id_key(r[1]), _id_key(r[2])))
    return out


def read_movies(path: Path) -> list[dict[str, str]]:
    """The ``items`` records of ``movies.csv``, in file order."""
    items: list[dict[str, str]] = []
    for n, row in _rows(path, _MOVIES):
        movie, title, genres = row["movieId"], row["title"], row["genres"]
        if not movie or not title:
            raise ValueError(f"{path}:{n}: not a movieId,title,genres line: {row}")
        doc = {"item_id": movie, "title": title}
        if genres and genres != "(no genres listed)":
            doc["category"] = ", ".join(genres.split("|"))
        items.append(doc)
    return items


def write_jsonl(
    ratings: Sequence[Rating], movies: Sequence[Mapping[str, str]], out: Path, prefix: str = "ml"
) -> tuple[Path, Path]:
    """``out/events.jsonl`` and ``out/items.jsonl`` in the topics' schemas; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    events, items = out / "events.jsonl", out / "items.jsonl"
    with events.open("w", encoding="utf-8") as f:
        for n, (t, user, movie, stars) in enumerate(ratings):
            doc = {
                "user_id": user,
                "type": rating_to_type(stars).value,
                "item_id": movie,
                "ts": t * 1000,
                "event_id": f"{prefix}{n}",
                "rating": stars,
            }
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with items.open("w", encoding="utf-8") as f:
        for doc in movies:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return events, items


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the release's folder (ratings.csv, movies.csv)")
    parser.add_argument("--out", type=Path, required=True, help="folder for events.jsonl and items.jsonl")
    parser.add_argument("--prefix", default="ml", help="event_id prefix")
    args = parser.parse_args(argv)
    ratings = read_ratings(args.folder / "ratings.csv")
    movies = read_movies(args.folder / "movies.csv")
    events, items = write_jsonl(ratings, movies, args.out, args.prefix)
    users = len({r[1] for r in ratings})
    print(f"{len(ratings)} ratings of {users} users, {len(movies)} movies -> {events}, {items}")


if __name__ == "__main__":
    main()
