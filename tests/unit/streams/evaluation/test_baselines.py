"""The causal baselines against lists worked out by hand, their exclusions, and their causality."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streamrec.streams.evaluation.baselines import (
    CoOccurrence,
    DecayedPopularity,
    ItemSpace,
    Popularity,
    Transition,
    make_baseline,
    top_k,
)
from streamrec.streams.schemas import Event, EventType

CATALOGUE = ["a", "b", "c", "d", "e"]


def ev(user: str, item: str | None, ts_s: float = 0.0, kind: EventType = EventType.VIEW) -> Event:
    query = "q" if kind is EventType.SEARCH else None
    return Event(user, kind, item, query, int(ts_s * 1000), f"{user}:{item}:{ts_s}")


def space(events: list[Event] = ()) -> ItemSpace:  # type: ignore[assignment]
    return ItemSpace.build(CATALOGUE, (e.item_id for e in events if e.item_id is not None))


def lists(baseline: object, events: list[Event]) -> list[list[str]]:
    return baseline.recommend(events)  # type: ignore[attr-defined, no-any-return]


# u1: a, e, d   u2: b   u3: b   u4: c   u5: a   u6 a (after u1's d)
STREAM = [
    ev("u1", "a", 0),
    ev("u1", "e", 1),
    ev("u2", "b", 2),
    ev("u3", "b", 3),
    ev("u4", "c", 4),
    ev("u5", "a", 5),
    ev("u1", "d", 6),
    ev("u6", "a", 7),
]


def test_top_k_breaks_ties_by_index_and_drops_minus_infinity() -> None:
    s = np.array([1.0, 3.0, 1.0, -np.inf, 3.0, 0.0])
    assert top_k(s, 3).tolist() == [1, 4, 0]
    assert top_k(s, 10).tolist() == [1, 4, 0, 2, 5]
    assert top_k(np.full(3, -np.inf), 2).tolist() == []


def test_popularity_plain_counts_with_exclusions() -> None:
    out = lists(Popularity(space(), 3), STREAM)
    assert out[0] == ["b", "c", "d"]  # only a has a count, and u1 named it; ties in catalogue order
    assert out[3] == ["a", "e", "c"]  # a 1, b 2 (u3 named b), e 1: a before e by order, then c 0
    # after u5's a: a 2, b 2, c 1, e 1; u5 named a
    assert out[5] == ["b", "c", "e"]
    assert out[7] == ["b", "c", "d"]  # a 3, b 2, c 1, d 1, e 1; u6 named a; c, d, e tie: order


def test_transition_ranks_what_followed_the_users_last_item() -> None:
    out = lists(Transition(space(), 3), STREAM)
    # after u5's a: a -> e once (u1); then popularity breaks the rest: b 2, c 1 (tie with e's 1, e is taken)
    assert out[5] == ["e", "b", "c"]
    # after u6's a: still only a -> e; u1's e -> d does not start from a
    assert out[7] == ["e", "b", "c"]
    # u2's b: nothing ever followed b: plain popularity (a 1, e 1, then c 0), b excluded
    assert out[2] == ["a", "e", "c"]


def test_cooccurrence_sums_the_recent_items_rows() -> None:
    out = lists(CoOccurrence(space(), 3, window=20), STREAM)
    # u1's a, e, d: pairs (a, e), (a, d), (e, d) in both directions. u6's a: C[a] = {e: 1, d: 1}; the tie
    # goes to popularity (e 1 = d 1: order, d first), then b by popularity
    assert out[7] == ["d", "e", "b"]
    # with a window of one item only consecutive pairs count: C[a] = {e: 1}
    out1 = lists(CoOccurrence(space(), 3, window=1), STREAM)
    assert out1[7] == ["e", "b", "c"]


def test_cooccurrence_dense_and_sparse_agree() -> None:
    rng = random.Random(3)
    items = [f"i{n}" for n in range(40)]
    events = [ev(f"u{rng.randrange(12)}", rng.choice(items), t) for t in range(400)]
    sp = ItemSpace.build(items, [])
    dense = CoOccurrence(sp, 10, window=5)
    sparse = CoOccurrence(sp, 10, window=5, dense_max_items=0)
    assert dense.dense is not None and sparse.dense is None
    assert dense.recommend(events) == sparse.recommend(events)


def test_decayed_popularity_forgets_with_its_half_life() -> None:
    events = [ev("u1", "a", 0), ev("u2", "a", 0), ev("u3", "b", 30), ev("u4", "c", 30)]
    decayed = lists(DecayedPopularity(space(), 3, half_life_s=10), events)
    plain = lists(Popularity(space(), 3), events)
    # at t = 30: a = 2 * 2**-3 = 0.25 < b = 1
    assert decayed[3] == ["b", "a", "d"]
    assert plain[3] == ["a", "b", "d"]


def test_decayed_popularity_rebases_instead_of_overflowing() -> None:
    # 600 half-lives apart: 2**600 is finite, but the next 600 would overflow without a rebase
    events = [ev("u1", "a", 0), ev("u2", "a", 1), ev("u3", "b", 600), ev("u4", "c", 1200)]
    baseline = DecayedPopularity(space(), 2, half_life_s=1.0)
    out = lists(baseline, events)
    assert out[2] == ["a", "c"]  # b is u3's own; a's 3 * 2**-600 still beats zero
    assert out[3] == ["b", "a"]  # b's 2**-600 beats a's 3 * 2**-1200 (0 in floating point) and d's 0
    assert np.isfinite(baseline.decayed).all()


@pytest.mark.parametrize("name", ["popularity", "popularity_decayed", "transition", "cooccurrence"])
def test_never_recommends_what_the_user_named_or_what_is_not_in_the_catalogue(name: str) -> None:
    rng = random.Random(5)
    items = [*CATALOGUE, "ghost"]  # "ghost" is only ever named by events: never recommendable
    events = [ev(f"u{rng.randrange(4)}", rng.choice(items), t) for t in range(60)]
    events.insert(10, ev("u1", None, 9.5, EventType.SEARCH))
    baseline = make_baseline(name, ItemSpace.build(CATALOGUE, items), 3)
    named: dict[str, set[str]] = {}
    for e, recs in zip(events, baseline.recommend(events), strict=True):
        if e.item_id is not None:
            named.setdefault(e.user_id, set()).add(e.item_id)
        assert not set(recs) & named.get(e.user_id, set())
        assert "ghost" not in recs
        assert len(recs) == min(3, len(set(CATALOGUE) - named.get(e.user_id, set())))


@pytest.mark.parametrize("name", ["popularity", "popularity_decayed", "transition", "cooccurrence"])
def test_causal_the_list_after_event_t_ignores_later_events(name: str) -> None:
    rng = random.Random(11)
    items = [f"i{n}" for n in range(30)]
    events = [ev(f"u{rng.randrange(8)}", rng.choice(items), t * 60) for t in range(300)]
    sp = ItemSpace.build(items, [])
    full = make_baseline(name, sp, 10).recommend(events)
    prefix = make_baseline(name, sp, 10).recommend(events[:150])
    assert full[:150] == prefix
    # and the answer is the same in any batching
    b = make_baseline(name, sp, 10)
    batched = [lst for i in range(0, 300, 7) for lst in b.recommend(events[i : i + 7])]
    assert batched == full


def test_only_consumed_types_are_excluded() -> None:
    events = [ev("u1", "a", 0), ev("u1", "b", 1, EventType.PURCHASE), ev("u2", "a", 2), ev("u2", "c", 3)]
    out = Popularity(space(), 3, consumed_types=frozenset({EventType.PURCHASE})).recommend(events)
    assert out[1] == ["a", "c", "d"]  # u1 viewed a (may be shown again) and bought b (never again)


def test_item_space_keeps_event_only_items_out_of_recommendations() -> None:
    sp = ItemSpace.build(["a", "b"], ["b", "x", "x", "y"])
    assert sp.ids == ("a", "b", "x", "y")
    assert sp.recommendable.tolist() == [True, True, False, False]


def test_unknown_baseline_name() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("magic", space(), 3)
