"""The MovieLens CSV converter: what ``streamrec evaluate --events/--items`` reads, typed and ordered as the
built-in MovieLens-100K."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.movielens_csv_to_jsonl import main, read_movies, read_ratings
from streamrec.streams.evaluation.data import jsonl_log
from streamrec.streams.schemas import EventType


def _release(folder: Path, ratings: str, movies: str) -> Path:
    folder.mkdir()
    (folder / "ratings.csv").write_text(ratings)
    (folder / "movies.csv").write_text(movies)
    return folder


def test_a_release_becomes_a_time_ordered_typed_log_the_evaluation_reads(tmp_path: Path) -> None:
    release = _release(
        tmp_path / "ml",
        "userId,movieId,rating,timestamp\n"
        "10,5,5.0,964982703\n"
        "2,31,3.5,964982703\n"  # same second as the line above: user 2 before user 10
        "2,4,2.0,964982703\n"  # and movie 4 before movie 31 (numeric order, not text order)
        "10,31,4.0,845553522\n",
        'movieId,title,genres\n4,"Waiting to Exhale (1995)",Comedy|Drama|Romance\n5,Father of the Bride (1995),'
        "(no genres listed)\n31,Dangerous Minds (1995),Drama\n",
    )
    main([str(release), "--out", str(tmp_path / "out")])
    log = jsonl_log(tmp_path / "out" / "events.jsonl", tmp_path / "out" / "items.jsonl")
    assert not log.skipped
    assert [(e.user_id, e.item_id, e.ts_ms, e.type) for e in log.events] == [
        ("10", "31", 845553522000, EventType.ADD_TO_CART),
        ("2", "4", 964982703000, EventType.VIEW),
        ("2", "31", 964982703000, EventType.CLICK),  # 3.5 stars: a 3
        ("10", "5", 964982703000, EventType.PURCHASE),
    ]
    assert len({e.event_id for e in log.events}) == 4
    assert log.catalogue == ["4", "5", "31"]
    items = {i.item_id: i for i in log.items}
    assert items["4"].title == "Waiting to Exhale (1995)"
    assert items["4"].category == "Comedy, Drama, Romance"
    assert items["5"].category is None


def test_files_without_the_columns_or_with_garbled_lines_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ratings.csv"
    bad.write_text("user,item,stars,time\n1,2,3,4\n")
    with pytest.raises(ValueError, match="no column userId"):
        read_ratings(bad)
    bad.write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n1,2,three,5\n")
    with pytest.raises(ValueError, match=r"ratings\.csv:3"):
        read_ratings(bad)
    movies = tmp_path / "movies.csv"
    movies.write_text("movieId,title,genres\n1,,Drama\n")
    with pytest.raises(ValueError, match=r"movies\.csv:2"):
        read_movies(movies)
