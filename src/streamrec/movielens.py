"""MovieLens-100K, read from the copy packaged with ``recbole``: the one parser of its files.

Used by the replay and the benchmarks (through :mod:`streamrec.streams.movielens`, which turns it into
items and events) and by the model export (``streamrec.export.corpus``: titles as calibration text). It
imports nothing else of streamrec, so any layer may use it.

Data: ``recbole/dataset_example/ml-100k/ml-100k.item`` and ``.inter`` (1,682 movies, 100,000 ratings by
943 users, tab-separated with typed headers such as ``item_id:token``). The folder is found with
``importlib.util.find_spec("recbole")`` WITHOUT importing recbole (which imports torch). F. Maxwell Harper
and Joseph A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015.

Movies: ``item_id`` = the MovieLens id; ``title`` = "<title> (<year>)" with a trailing article moved to the
front ("Usual Suspects, The" -> "The Usual Suspects (1995)"); ``raw_title`` as in the file; ``genres``;
``category`` = the genres joined with ", "; ``tags`` = the decade (e.g. "1990s"). Ratings in timestamp
order (ties: user id, then item id, numerically).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import StreamrecError

__all__ = [
    "N_ITEMS",
    "N_RATINGS",
    "N_USERS",
    "Movie",
    "MovieLensError",
    "Rating",
    "find_ml100k",
    "load_movies",
    "load_ratings",
    "movie_titles",
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
    raw_title: str = ""  # as in the file: "Usual Suspects, The"

    @property
    def category(self) -> str | None:
        return ", ".join(self.genres) or None

    @property
    def tags(self) -> tuple[str, ...]:
        return (f"{self.year[:3]}0s",) if len(self.year) == 4 and self.year.isdigit() else ()


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
        movies.append(Movie(row[i_id], _display_title(row[i_title], year), year, genres, raw_title=row[i_title]))
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
