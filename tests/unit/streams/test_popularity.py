from __future__ import annotations

import pytest

from streamrec.streams.popularity import RecentPopularity


def test_decayed_order_and_scores() -> None:
    pop = RecentPopularity(half_life_s=10.0, refresh_s=0.0)
    pop.add("old", 4.0, t_s=0.0)  # worth 4 * 0.5**2 = 1.0 at t=20
    pop.add("new", 1.5, t_s=20.0)
    top = pop.top(2, now_s=20.0)
    assert [i for i, _ in top] == ["new", "old"]
    assert top[1][1] == pytest.approx(1.0)
    assert top[0][1] == pytest.approx(1.5)


def test_exclusions_eligibility_and_removal() -> None:
    pop = RecentPopularity(half_life_s=100.0, refresh_s=0.0)
    for i, w in enumerate([5.0, 4.0, 3.0, 2.0, 1.0]):
        pop.add(f"i{i}", w, t_s=0.0)
    assert [i for i, _ in pop.top(2, 0.0, exclude={"i0"})] == ["i1", "i2"]
    assert [i for i, _ in pop.top(2, 0.0, eligible=lambda i: i != "i1")] == ["i0", "i2"]
    pop.remove("i0")
    assert [i for i, _ in pop.top(1, 0.0)] == ["i1"]


def test_rebase_keeps_order_over_very_long_times() -> None:
    pop = RecentPopularity(half_life_s=1.0, refresh_s=0.0)
    pop.add("a", 1.0, t_s=0.0)
    pop.add("b", 1.0, t_s=600.0)  # forces a rebase (exponent > 500): "a" has decayed to nothing
    pop.add("c", 2.0, t_s=600.0)
    assert [i for i, _ in pop.top(3, 600.0)] == ["c", "b"]
    assert pop.top(1, 601.0)[0][1] == pytest.approx(1.0)
