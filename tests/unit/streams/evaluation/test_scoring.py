"""Evaluation points, metrics, coverage and the paired bootstrap, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.streams.evaluation.scoring import (
    EvalPoint,
    bootstrap_mean,
    coverage,
    eval_points,
    paired_bootstrap,
    score_lists,
)
from streamrec.streams.schemas import Event, EventType

V, S, C, P = EventType.VIEW, EventType.SEARCH, EventType.CLICK, EventType.PURCHASE


def ev(user: str, kind: EventType, item: str | None, ts: int = 0) -> Event:
    return Event(user, kind, None if kind is S else item, item if kind is S else None, ts, f"{user}-{ts}-{item}")


def test_points_are_each_next_item_event_against_the_users_previous_event() -> None:
    events = [
        ev("u1", V, "a", 0),
        ev("u2", V, "b", 1),
        ev("u1", S, "query", 2),
        ev("u1", C, "c", 3),
        ev("u2", P, "a", 4),
        ev("u1", V, "d", 5),
        ev("u3", S, "only a search", 6),
        ev("u3", V, "e", 7),
    ]
    assert eval_points(events) == [
        EvalPoint(1, "u2", "a"),  # u2's list after its first event, scored against its second
        EvalPoint(2, "u1", "c"),  # the list after u1's search, scored against the click that followed it
        EvalPoint(3, "u1", "d"),
        EvalPoint(6, "u3", "e"),  # a search as the first event: its list counts
    ]


def test_a_user_with_one_event_or_only_searches_has_no_point() -> None:
    assert eval_points([ev("u1", V, "a"), ev("u2", S, "q"), ev("u2", S, "r")]) == []


def test_metrics_by_rank() -> None:
    points = [EvalPoint(0, "u", "t")] * 4
    lists = [["t", "x", "y"], ["x", "t", "y"], ["x", "y", "t"], ["x", "y", "z"]]
    s = score_lists(lists, points, k=2)  # rank 3 is outside the top 2
    assert s.hr.tolist() == [1, 1, 0, 0]
    assert s.mrr.tolist() == [1, 0.5, 0, 0]
    assert s.ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 0, 0])
    assert s.means() == pytest.approx({"hr": 0.5, "mrr": 0.375, "ndcg": (1 + 1 / math.log2(3)) / 4})


def test_score_lists_needs_one_list_per_point() -> None:
    with pytest.raises(ValueError):
        score_lists([["a"]], [], k=10)


def test_coverage_counts_distinct_items_in_the_first_k() -> None:
    assert coverage([["a", "b"], ["b", "c"], ["a", "d"]], k=1, catalogue_size=4) == 0.5
    assert coverage([["a", "b"], ["b", "c"]], k=2, catalogue_size=4) == 0.75


def test_paired_bootstrap_resamples_users() -> None:
    # user u: a = (1, 0), b = (0, 0); user v: a = (1, 1), b = (1, 0). Every resample of 2 users, paired,
    # has the same difference 0.5 (each user's own difference is 0.5), while the ratio is 2 (v, v),
    # 3 (u, v) or infinite (u, u: b = 0).
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    r = paired_bootstrap(a, b, ["u", "u", "v", "v"], rounds=400, seed=1)
    assert (r.diff, r.diff_lo, r.diff_hi) == pytest.approx((0.5, 0.5, 0.5))
    assert r.ratio == pytest.approx(3.0)
    assert r.ratio_lo == pytest.approx(2.0)
    assert r.ratio_hi == math.inf


def test_paired_bootstrap_interval_covers_the_spread_between_users() -> None:
    # u gains 1 on each of its points, v loses 1: the mean difference is 0, and resampling users alone
    # makes it anything between -1 and 1.
    a, b = np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0])
    r = paired_bootstrap(a, b, ["u", "u", "v", "v"], rounds=2000, seed=0)
    assert r.diff == 0.0
    assert r.diff_lo == -1.0 and r.diff_hi == 1.0


def test_bootstrap_mean_of_a_constant_is_that_constant() -> None:
    assert bootstrap_mean(np.full(6, 0.25), ["u", "v", "w"] * 2) == (0.25, 0.25)
