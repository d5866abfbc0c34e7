"""The MovieLens-100K loader on the real data packaged with recbole, and the replay's pure parts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter

import pytest

from streamrec.commands.tail import LatencySummary, format_recommendation, percentile
from streamrec.streams.movielens import (
    N_ITEMS,
    N_RATINGS,
    N_USERS,
    Movie,
    MovieLensError,
    Rating,
    find_ml100k,
    load_movies,
    load_ratings,
    movie_item,
    rating_to_type,
    replay_events,
    schedule_offsets_s,
)
from streamrec.streams.schemas import EventType, ItemRecord, Recommendation, decode_event, decode_item


@pytest.fixture(scope="module")
def movies() -> list[Movie]:
    return load_movies()


@pytest.fixture(scope="module")
def ratings() -> list[Rating]:
    return load_ratings()


def test_found_without_importing_recbole() -> None:
    assert find_ml100k().name == "ml-100k"
    code = (
        "import sys; from streamrec.streams.movielens import load_movies; load_movies(); "
        "print('recbole' in sys.modules or 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_movies(movies: list[Movie]) -> None:
    assert len(movies) == N_ITEMS == len({m.item_id for m in movies})
    toy = movies[0]
    assert (toy.item_id, toy.title, toy.genres) == ("1", "Toy Story (1995)", ("Animation", "Children's", "Comedy"))
    assert movie_item(toy) == ItemRecord(
        "1", "Toy Story (1995)", category="Animation, Children's, Comedy", tags=("1990s",)
    )
    by_id = {m.item_id: m for m in movies}
    assert by_id["12"].title == "The Usual Suspects (1995)"  # "Usual Suspects, The"
    for m in movies:
        assert decode_item(m.item_id.encode(), movie_item(m).to_json_bytes()) == movie_item(m)


def test_ratings(ratings: list[Rating]) -> None:
    assert len(ratings) == N_RATINGS
    assert len({r.user_id for r in ratings}) == N_USERS
    assert [r.ts_s for r in ratings] == sorted(r.ts_s for r in ratings)
    assert Counter(rating_to_type(r.rating) for r in ratings) == {
        EventType.ADD_TO_CART: 34_174,
        EventType.CLICK: 27_145,
        EventType.PURCHASE: 21_201,
        EventType.VIEW: 11_370 + 6_110,
    }


def test_rating_rule() -> None:
    assert [rating_to_type(r) for r in (1, 2, 3, 4, 5)] == [
        EventType.VIEW,
        EventType.VIEW,
        EventType.CLICK,
        EventType.ADD_TO_CART,
        EventType.PURCHASE,
    ]


def test_replay_events(movies: list[Movie], ratings: list[Rating]) -> None:
    events = list(replay_events(ratings, movies, limit=2000, users=20, search_fraction=0.2, seed=7))
    assert len(events) == 2000
    assert {int(e.user_id) for e in events} <= set(range(1, 21))
    searches = [e for e in events if e.type is EventType.SEARCH]
    assert 250 < len(searches) < 450
    assert events == list(replay_events(ratings, movies, limit=2000, users=20, search_fraction=0.2, seed=7))
    assert len({e.event_id for e in events}) == len(events)
    # per user, original timestamps never go back
    last: dict[str, int] = {}
    for e in events:
        assert e.orig_ts_ms >= last.get(e.user_id, 0)
        last[e.user_id] = e.orig_ts_ms
    for i, e in enumerate(events[:300]):
        decoded = decode_event(
            e.payload(1_763_800_000_000), record_ts_ms=0, topic="t", partition=0, offset=i, key=e.key
        )
        assert (decoded.user_id, decoded.type, decoded.event_id, decoded.ts_ms) == (
            e.user_id,
            e.type,
            e.event_id,
            1_763_800_000_000,
        )
        assert json.loads(e.payload(1))["orig_ts"] == e.orig_ts_ms
        if e.type is EventType.SEARCH:
            assert decoded.query and decoded.item_id is None
        else:
            assert decoded.item_id == e.item_id and decoded.query is None
    plain = list(replay_events(ratings, movies, limit=10))
    assert [e.type for e in plain] == [rating_to_type(r.rating) for r in ratings[:10]]
    with pytest.raises(MovieLensError):
        next(replay_events(ratings, movies, search_fraction=2.0))


def test_schedule(movies: list[Movie], ratings: list[Rating]) -> None:
    events = list(replay_events(ratings, movies, limit=5))
    assert schedule_offsets_s(events, rate=100.0) == [0.0, 0.01, 0.02, 0.03, 0.04]
    assert schedule_offsets_s(events) == [0.0] * 5
    by_time = schedule_offsets_s(events, speedup=1000.0)
    assert by_time[0] == 0.0 and by_time == sorted(by_time)
    assert by_time[-1] == pytest.approx((events[-1].orig_ts_ms - events[0].orig_ts_ms) / 1e6)
    with pytest.raises(MovieLensError):
        schedule_offsets_s(events, rate=1.0, speedup=1.0)


def test_tail_formatting() -> None:
    rec = Recommendation("7", "e", (("1", 0.9), ("2", 0.8), ("3", 0.7)), "m", 1000, 1010, {"encode": 2.0})
    line = format_recommendation(rec, 1025, {"1": "Toy Story (1995)"}, top=2)
    assert line == "user 7 | 25 ms (encode 2.0) | 1 Toy Story (1995) 0.900; 2 0.800 (+1)"
    s = LatencySummary()
    for ms in range(1, 101):
        s.add(float(ms))
    assert (percentile(sorted(s.latencies_ms), 50), percentile(sorted(s.latencies_ms), 99)) == (50.0, 99.0)
    assert "p95 95.0" in s.describe()
    out = io.StringIO()
    print(LatencySummary().describe(), file=out)
    assert out.getvalue().startswith("0 recommendations")


def test_one_loader_shared_by_the_export_without_streams() -> None:
    """streamrec.movielens is the one parser; the export's calibration corpus reads it and imports no streams."""
    code = (
        "import sys; from streamrec.export.corpus import movielens_texts; t = movielens_texts(); "
        "print(len(t), any(m.startswith('streamrec.streams') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(N_ITEMS), "False"]
    from streamrec.export.corpus import movielens_texts

    texts = movielens_texts()
    assert texts[0] == "Toy Story (1995) - Animation, Children's, Comedy"
    assert "Usual Suspects, The (1995) - Crime, Thriller" in texts  # the file's own title
