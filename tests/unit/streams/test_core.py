"""The recommender core: one batch step, Kafka-free -- signals, exclusions, learning, the live quality metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from streamrec.index import ExactIndex
from streamrec.streams.core import CoreConfig, RecommenderCore, StepResult
from streamrec.streams.covisit import CovisitConfig, CovisitGraph
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import SessionConfig, SessionState, make_strategy

D = 8


def axis(i: int, noise: float = 0.0, seed: int = 0) -> npt.NDArray[np.float32]:
    v = np.zeros(D, np.float32)
    v[i % D] = 1.0
    if noise:
        v += np.random.default_rng(seed).normal(0, noise, D).astype(np.float32)
    return v / np.linalg.norm(v)


class TextByTopic:
    """Embeds a text on the axis named by its first word: "t3 ..." -> axis 3."""

    dim = D
    name = "topic-encoder"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return np.stack([axis(int(t.split()[0][1:])) for t in texts]) if texts else np.empty((0, D), np.float32)


def make_core(
    n_items: int = 40, *, covisit: bool = True, k: int = 5, popularity: float = 0.1, **session: object
) -> RecommenderCore:
    index = ExactIndex(D)
    ids = [f"i{n}" for n in range(n_items)]
    index.upsert(ids, np.stack([axis(n % D, 0.05, n) for n in range(n_items)]))
    return RecommenderCore(
        encoder=TextByTopic(),
        index=index,
        titles={i: f"t{n % D} item {i}" for n, i in enumerate(ids)},
        strategy=make_strategy("decayed_mean", SessionConfig(**session)),  # type: ignore[arg-type]
        popularity=RecentPopularity(half_life_s=86400),
        covisit=CovisitGraph(CovisitConfig()) if covisit else None,
        config=CoreConfig(k=k, popularity_weight=popularity),
    )


def ev(user: str, item: str, t: int, kind: EventType = EventType.VIEW, eid: str | None = None) -> Event:
    return Event(user, kind, item, None, t * 1000, eid or f"{user}:{item}:{t}")


def run(
    core: RecommenderCore,
    events: Sequence[Event],
    states: dict[str, SessionState],
    *,
    batch: int = 4,
    learn: bool = True,
) -> list[StepResult]:
    out = []
    for s in range(0, len(events), batch):
        b = events[s : s + batch]
        r = core.step(b, {e.user_id: states.get(e.user_id) for e in b})
        if learn:
            core.learn(r)
        states.update(r.states)
        out.append(r)
    return out


def test_a_step_answers_k_items_per_event_never_a_consumed_one() -> None:
    core = make_core()
    states: dict[str, SessionState] = {}
    events = [ev("u", f"i{n}", n) for n in range(0, 30, 3)]
    results = run(core, events, states)
    outcomes = [o for r in results for o in r.outcomes]
    assert len(outcomes) == len(events)
    consumed: set[str] = set()
    for e, o in zip(events, outcomes, strict=True):
        consumed.add(e.item_id or "")
        ids = [i for i, _ in o.items]
        assert len(ids) == 5 and len(set(ids)) == 5
        assert not consumed & set(ids), "a consumed item was recommended"
    assert all(i in states["u"].consumed for i in consumed)


def test_the_covisitation_signal_learns_what_others_chose_next() -> None:
    core = make_core()
    states: dict[str, SessionState] = {}
    # i1 (topic 1) is followed by i30 (topic 6) for many users: text alone would never propose it
    history = [e for u in range(12) for e in (ev(f"u{u}", "i1", 10 * u), ev(f"u{u}", "i30", 10 * u + 1))]
    run(core, history, states)
    (r,) = run(core, [ev("new", "i1", 500)], states)
    assert r.outcomes[0].items[0][0] == "i30"
    assert r.outcomes[0].fallback is None
    # the same stream without the collaborative signal: i30 is not first
    plain = make_core(covisit=False, popularity=0)  # (popularity alone would find i30 too: it is everyone's)
    run(plain, history, {})
    (r2,) = run(plain, [ev("new", "i1", 500)], {})
    assert r2.outcomes[0].items[0][0] != "i30"


def test_a_new_item_without_interactions_reaches_a_user_whose_session_is_about_it() -> None:
    core = make_core()
    states: dict[str, SessionState] = {}
    run(core, [e for u in range(5) for e in (ev(f"u{u}", "i2", u), ev(f"u{u}", "i3", u + 1))], states)
    # a new catalogue item on topic 2, never interacted with
    assert isinstance(core.index, ExactIndex)
    core.index.upsert(["fresh"], axis(2)[None, :])
    (r,) = run(core, [ev("v", "i2", 100), ev("v", "i10", 101)], states, batch=2)  # i2, i10: both topic 2
    assert "fresh" in [i for i, _ in r.outcomes[1].items]


def test_the_live_metric_scores_each_event_against_the_previous_list() -> None:
    core = make_core(covisit=False)
    states: dict[str, SessionState] = {}
    (r1,) = run(core, [ev("u", "i0", 1)], states)
    first = [i for i, _ in r1.outcomes[0].items]
    assert not r1.outcomes[0].live_evaluated  # nothing shown before
    hit, miss = first[2], "i39" if "i39" not in first else "i38"
    (r2,) = run(core, [ev("u", hit, 2), ev("u", miss, 3)], states, batch=2)
    a, b = r2.outcomes
    assert a.live_evaluated and a.live_rank == 3
    second = [i for i, _ in a.items]
    assert b.live_evaluated and (b.live_rank == (second.index(miss) + 1 if miss in second else None))
    assert states["u"].last_list == tuple(i for i, _ in b.items)
    (r3,) = run(core, [Event("u", EventType.SEARCH, None, "t1 shoes", 4000, "s1")], states)
    assert not r3.outcomes[0].live_evaluated  # a search names no item


def test_a_redelivered_event_teaches_nothing_and_is_not_scored_again() -> None:
    core = make_core()
    states: dict[str, SessionState] = {}
    run(core, [ev("u", "i1", 1), ev("u", "i2", 2, eid="e2")], states)
    assert core.covisit is not None
    before = core.covisit.row("i1")
    (r,) = run(core, [ev("u", "i2", 2, eid="e2")], states)
    assert r.outcomes[0].duplicate and not r.outcomes[0].live_evaluated and r.deltas == []
    assert core.covisit.row("i1") == before


def test_reshowing_is_a_per_type_setting() -> None:
    from streamrec.streams.schemas import EventType as T

    core = make_core(consumed_types=frozenset({T.PURCHASE}), exclude_seen=False)
    states: dict[str, SessionState] = {}
    run(core, [ev("u", "i1", 1), ev("u", "i9", 2, T.PURCHASE)], states)
    assert "i1" not in states["u"].consumed and "i9" in states["u"].consumed
    (r,) = run(core, [ev("u", "i17", 3)], states)  # topic 1, like i1 and i9
    ids = [i for i, _ in r.outcomes[0].items]
    assert "i9" not in ids  # purchased: consumed
    assert "i1" in ids and "i17" not in states["u"].consumed  # viewed items may be shown again


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_batching_does_not_change_the_answers(batch: int) -> None:
    events = [ev(f"u{n % 3}", f"i{(n * 7) % 40}", n) for n in range(30)]
    # what is learned (popularity, co-visitation) reaches the next batch; the session part is batch-invariant
    ref = [o.items for r in run(make_core(covisit=False, popularity=0), events, {}, batch=1) for o in r.outcomes]
    got = [o.items for r in run(make_core(covisit=False, popularity=0), events, {}, batch=batch) for o in r.outcomes]
    assert got == ref


@pytest.mark.parametrize("type_weighted", [False, True])
def test_the_covisitation_pairs_weigh_every_item_event_alike_unless_told_otherwise(type_weighted: bool) -> None:
    core = make_core()
    core.covisit = CovisitGraph(CovisitConfig(type_weighted=type_weighted))
    states: dict[str, SessionState] = {}
    view = run(core, [ev("u", "i1", 1), ev("u", "i2", 2), ev("v", "i1", 3)], states, batch=3)[0]
    purchase = run(core, [ev("v", "i3", 4, EventType.PURCHASE)], states, batch=1)[0]
    pair_view = {d.item: d for d in view.deltas}["i1"].pairs["i2"]
    pair_purchase = {d.item: d for d in purchase.deltas}["i1"].pairs["i3"]
    ratio = SessionConfig().weight_of(EventType.PURCHASE) / SessionConfig().weight_of(EventType.VIEW)
    assert pair_purchase / pair_view == pytest.approx(ratio if type_weighted else 1.0)
