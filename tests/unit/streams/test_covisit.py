"""The co-visitation graph: the learning rule, the serving formula, bounded rows, and the published form."""

from __future__ import annotations

import math

import pytest

from streamrec.errors import ConfigError
from streamrec.streams.covisit import CovisitConfig, CovisitGraph, CovisitRow, CovisitRowError, DeltaBatch
from streamrec.streams.covisit_wire import decode_row, encode_row

DAY = 86_400.0
# no decay within these tests (a half-life of ~30,000 years of event time)
STILL = {"half_life_s": 1e12}


def learn(graph: CovisitGraph, *users: list[str], ts: float = 0.0) -> None:
    """Each user's items in order, one event each (weight 1), learned as the core learns them."""
    for items in users:
        batch = DeltaBatch(graph.config)
        previous: list[str] = []  # most recent first, distinct
        for item in items:
            batch.observe(item, 1.0, ts, previous)
            previous = [item, *[p for p in previous if p != item]]
        graph.apply(batch.deltas())


def test_the_learning_rule_pairs_each_item_with_earlier_ones_by_distance() -> None:
    cfg = CovisitConfig(window=2, backward_weight=0.5, **STILL)
    batch = DeltaBatch(cfg)
    batch.observe("c", 1.0, 0.0, ["b", "a", "z"])  # previous: b (d=1), a (d=2), z (d=3: beyond the window)
    rows = {d.item: d for d in batch.deltas()}
    assert rows["b"].pairs == {"c": 1.0}  # forward, 1/d
    assert rows["a"].pairs == {"c": 0.5}
    assert "z" not in rows
    assert rows["c"].pairs == {"b": 0.5, "a": 0.25}  # backward: 0.5 x 1/d
    assert rows["c"].n == 1.0
    # only the direct successor of the user's previous item is a transition
    assert rows["b"].nexts == {"c": 1.0}
    assert rows["a"].nexts == {} and rows["c"].nexts == {}


def test_scores_follow_the_serving_formula() -> None:
    cfg = CovisitConfig(
        window=5,
        backward_weight=0.0,
        damping=0.2,
        source_norm=0.5,
        position_half_life=4.0,
        transition_weight=0.5,
        **STILL,
    )
    g = CovisitGraph(cfg)
    # u1: a b x; u2: a x; u3: b y; u4: x (x's own weight); rows: a->{b:1, x:1/2 + 1}, b->{x:1, y:1}
    learn(g, ["a", "b", "x"], ["a", "x"], ["b", "y"], ["x"])
    n = {"a": 2.0, "b": 2.0, "x": 3.0, "y": 1.0}
    c = {("a", "b"): 1.0, ("a", "x"): 1.5, ("b", "x"): 1.0, ("b", "y"): 1.0}
    t = {("a", "b"): 1.0, ("a", "x"): 1.0, ("b", "x"): 1.0, ("b", "y"): 1.0}
    recent = ["b", "a"]  # b is the user's last item (p = 0), a one back (p = 1)

    def expected(j: str) -> float:
        total = 0.0
        for p, i in enumerate(recent):
            if (i, j) not in c:
                continue
            evidence = c[i, j] + (cfg.transition_weight * t[i, j] if p == 0 else 0.0)
            total += 0.5 ** (p / 4.0) * evidence / (n[i] ** 0.5 * n[j] ** 0.2)
        return total

    got = g.scores(recent, now_s=0.0, exclude={"a", "b"})
    assert set(got) == {"x", "y"}
    for j in ("x", "y"):
        assert got[j] == pytest.approx(expected(j), rel=1e-9)
    # the transition evidence counts for the LAST item only
    no_transition = CovisitGraph(CovisitConfig(**{**_fields(cfg), "transition_weight": 0.0}))
    learn(no_transition, ["a", "b", "x"], ["a", "x"], ["b", "y"], ["x"])
    base = no_transition.scores(recent, now_s=0.0, exclude={"a", "b"})
    assert got["y"] - base["y"] == pytest.approx(0.5 * 1.0 / (2.0**0.5 * 1.0**0.2))


def _fields(cfg: CovisitConfig) -> dict[str, object]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_a_working_row_serves_what_it_would_publish() -> None:
    """Offline the graph serves its working rows (up to ``keep`` entries); the workers serve the published rows
    (the ``neighbours`` largest): both must score alike, or the offline evaluation would not be the live one."""
    cfg = CovisitConfig(window=1, neighbours=2, keep=4, per_source=10, backward_weight=0.0, **STILL)
    working = CovisitGraph(cfg)
    # a is followed by x 3 times, y twice, z and w once
    learn(working, ["a", "x"], ["a", "x"], ["a", "x"], ["a", "y"], ["a", "y"], ["a", "z"], ["a", "w"])
    for j in ("x", "y", "z", "w"):
        learn(working, [j])
    assert len(working.row("a").ids) == 2  # type: ignore[union-attr]
    replica = CovisitGraph(cfg)
    replica.put_rows([r for i in ("a", "x", "y", "z", "w") if (r := working.row(i)) is not None])
    served = working.scores(["a"], now_s=0.0)
    assert set(served) == {"x", "y"}
    assert served == pytest.approx(replica.scores(["a"], now_s=0.0))


def test_a_row_is_bounded_while_it_learns() -> None:
    cfg = CovisitConfig(window=1, neighbours=3, keep=6, backward_weight=0.0, **STILL)
    g = CovisitGraph(cfg)
    learn(g, *[["a", f"j{i}"] for i in range(50)])
    assert len(g._rows["a"].nbrs) <= 6
    assert set(g._rows["a"].nxt) <= set(g._rows["a"].nbrs)


def test_by_default_a_learning_row_has_room_for_four_times_what_it_publishes() -> None:
    """A pair that will be strong arrives as a weak one: a row with room for only what it publishes would drop
    it at the next cut. By default a row keeps up to 4 x ``neighbours`` while it learns and is cut to half that
    when it overflows; what it publishes is still the ``neighbours`` largest."""
    cfg = CovisitConfig(window=1, neighbours=3, backward_weight=0.0, **STILL)
    assert cfg.working_room == 12
    assert CovisitConfig(neighbours=3, keep=5).working_room == 5
    g = CovisitGraph(cfg)
    learn(g, *[["a", f"j{i}"] for i in range(12)])
    assert len(g._rows["a"].nbrs) == 12  # not cut yet
    learn(g, ["a", "j12"])
    assert len(g._rows["a"].nbrs) == 6  # overflowed: cut to half the room
    learn(g, *[["a", "late"]] * 3)  # a newcomer that grows after the cut
    learn(g, *[["a", f"k{i}"] for i in range(5)])  # fills the room again (6 + 1 + 5 = 12): no cut
    row = g.row("a")
    assert row is not None and row.ids[0] == "late" and len(row.ids) == 3


def test_the_published_row_carries_the_transitions_to_a_replica() -> None:
    g = CovisitGraph(CovisitConfig(window=2, **STILL))
    learn(g, ["a", "b", "c"], ["a", "c"])
    row = g.row("a")
    assert row is not None and row.ids == ("c", "b")  # c: 1/2 + 1, b: 1
    assert row.nexts == (1.0, 1.0)
    again = decode_row(encode_row(row))  # what travels on the rows topic
    assert again == row
    replica = CovisitGraph(g.config)
    replica.put_row(again)
    assert replica.row("a") == row  # the compact replica form gives it back


def test_a_row_of_an_older_writer_without_transitions_still_reads() -> None:
    old = b'{"v":1,"item":"a","n":2.0,"ref":0.0,"ver":3,"ids":["b"],"w":[1.5]}'
    row = CovisitRow.from_json_bytes(old)
    assert row.nexts == () and row.weights == (1.5,)
    replica = CovisitGraph(CovisitConfig(**STILL))
    replica.put_row(row)
    assert replica.scores(["a"], now_s=0.0)  # served without transitions
    with pytest.raises(CovisitRowError):
        CovisitRow.from_json_bytes(b'{"v":1,"item":"a","n":2.0,"ref":0.0,"ver":3,"ids":["b","c"],"w":[1.5]}')


@pytest.mark.parametrize(
    "bad",
    [
        {"keep": 5, "neighbours": 10},
        {"backward_weight": -1.0},
        {"transition_weight": math.nan},
        {"damping": 1.5},
        {"half_life_s": 0.0},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        CovisitConfig(**bad)  # type: ignore[arg-type]


def test_counts_decay_with_event_time() -> None:
    g = CovisitGraph(CovisitConfig(window=1, half_life_s=DAY, backward_weight=0.0))
    learn(g, ["a", "b"], ts=0.0)
    learn(g, ["a", "c"], ts=DAY)  # one half-life later: b's pair is worth half of c's
    row = g.row("a")
    assert row is not None
    weights = dict(zip(row.ids, row.weights, strict=True))
    assert weights["b"] / weights["c"] == pytest.approx(0.5)


def test_a_batch_learns_what_one_batch_per_event_would() -> None:
    """A batch values every row at one reference time; valued at any later time, the counts are the ones
    learned event by event (each at its own time)."""
    cfg = CovisitConfig(window=3, half_life_s=DAY, backward_weight=0.5)
    events = [("a", 0.0, []), ("b", 3600.0, ["a"]), ("c", 7200.0, ["b", "a"]), ("a", 0.5 * DAY, ["c", "b"])]
    together, apart = CovisitGraph(cfg), CovisitGraph(cfg)
    batch = DeltaBatch(cfg)
    for item, ts, previous in events:
        batch.observe(item, 1.0, ts, previous)
        single = DeltaBatch(cfg)
        single.observe(item, 1.0, ts, previous)
        apart.apply(single.deltas())
    together.apply(batch.deltas())

    def at(graph: CovisitGraph, item: str, t: float) -> dict[str, float]:
        row = graph.row(item)
        assert row is not None
        f = 0.5 ** ((t - row.ref_s) / DAY)
        return {"n": row.n * f, **{j: w * f for j, w in zip(row.ids, row.weights, strict=True)}} | {
            f"next:{j}": t * f for j, t in zip(row.ids, row.nexts, strict=False)
        }

    for item in ("a", "b", "c"):
        assert at(together, item, 2 * DAY) == pytest.approx(at(apart, item, 2 * DAY), rel=1e-12)
    # and a batch spanning more than 16 half-lives is re-valued on the way, not overflowed
    long = DeltaBatch(CovisitConfig(half_life_s=1.0))
    long.observe("a", 1.0, 0.0, [])
    long.observe("b", 1.0, 5_000.0, ["a"])
    assert all(math.isfinite(d.n) for d in long.deltas())
    assert {d.item: d.pairs for d in long.deltas()}["a"] == {"b": 1.0}


def test_scores_of_many_sources_are_the_sum_of_each_sources_scores() -> None:
    """The neighbour lists of a user's sources are summed by id (without sorting: ``_sum_by_id``): against the
    same sum taken source by source in Python, over random graphs, with and without a ``limit``."""
    import random

    rng = random.Random(11)
    cfg = CovisitConfig(window=6, transition_weight=0.0, per_source=15, neighbours=15, **STILL)
    g = CovisitGraph(cfg)
    items = [f"i{k}" for k in range(60)]
    learn(g, *[[rng.choice(items) for _ in range(rng.randint(2, 14))] for _ in range(300)])
    for _ in range(50):
        recent = list(dict.fromkeys(rng.choice(items) for _ in range(rng.randint(2, 15))))
        expected: dict[str, float] = {}
        for p, item in enumerate(recent[: cfg.sources]):
            for j, s in g.scores([item], now_s=0.0).items():  # one source: no summing by id
                expected[j] = expected.get(j, 0.0) + 0.5 ** (p / cfg.position_half_life) * s
        exclude = set(rng.sample(items, 5))
        got = g.scores(recent, now_s=0.0, exclude=exclude)
        assert got == pytest.approx({j: s for j, s in expected.items() if j not in exclude}, rel=1e-12)
        best = sorted(expected.items(), key=lambda kv: -kv[1])[:5]
        top = g.scores(recent, now_s=0.0, limit=5)
        assert list(top) == [j for j, _ in best]
        assert list(top.values()) == pytest.approx([s for _, s in best], rel=1e-12)


def _published(graph: CovisitGraph) -> list[CovisitRow]:
    return [r for item in list(graph._rows) if (r := graph.row(item)) is not None]


def test_rows_stored_undecoded_serve_what_decoded_rows_serve() -> None:
    """A replica stores binary rows undecoded (``put_raw``) and decodes one when it is first read: the same
    scores and the same publishable rows as rows decoded on arrival (``put_rows``)."""
    from streamrec.streams.covisit_wire import encode_row, peek_row

    cfg = CovisitConfig(window=4, **STILL)
    working = CovisitGraph(cfg)
    learn(working, ["a", "b", "c", "d"], ["b", "c", "e"], ["a", "c", "e", "f"], ["d", "e"], ["f", "a"])
    rows = _published(working)
    eager, lazy = CovisitGraph(cfg), CovisitGraph(cfg)
    eager.put_rows(rows)
    assert lazy.put_raw([(*peek_row(encode_row(r)), encode_row(r)) for r in rows]) == len(rows)
    assert all(lazy._rows[r.item].raw is not None for r in rows)  # nothing decoded yet
    assert lazy.weight("a", 0.0) == eager.weight("a", 0.0)  # weights are known without decoding
    for recent in (["a"], ["c", "b"], ["e", "d", "a"], ["f", "e", "c", "b", "a"]):
        assert lazy.scores(recent, now_s=0.0, limit=3) == eager.scores(recent, now_s=0.0, limit=3)
    assert lazy._rows["a"].raw is None  # decoded once read, and kept decoded
    assert {r.item: r for r in _published(lazy)} == {r.item: r for r in _published(eager)}
    # versions as put_rows: an older row does not replace a newer one
    old = rows[0]
    stale = CovisitRow(old.item, old.n, old.ref_s, old.ids, old.weights, old.version - 1, old.nexts)
    assert lazy.put_raw([(*peek_row(encode_row(stale)), encode_row(stale))]) == 0


def test_a_row_that_does_not_decode_when_read_serves_nothing_and_is_counted() -> None:
    import struct

    from streamrec.streams.covisit_wire import peek_row

    # structurally a row (the replica's check passes), but a neighbour weight is not finite
    bad = b"".join(
        (
            struct.pack("<BBddqI", 2, 2, 2.0, 0.0, 7, 1),
            struct.pack("<II", 1, 1),
            b"ab",
            struct.pack("<d", math.inf),
            struct.pack("<I", 0),
        )
    )
    g = CovisitGraph(CovisitConfig(**STILL))
    found: list[int] = []
    g.on_invalid = lambda: found.append(1)  # the worker counts them in streamrec_covisit_invalid_messages_total
    assert g.put_raw([(*peek_row(bad), bad)]) == 1
    assert g.scores(["a"], now_s=0.0) == {}
    assert g.scores(["a"], now_s=0.0) == {}  # found once: the row is kept decoded (empty)
    assert g.invalid_rows == 1 and found == [1]
    assert g.version("a") == 7  # a newer, valid row still replaces it
    learn(owner := CovisitGraph(g.config), ["a", "c"])
    good = owner.row("a")
    assert good is not None
    g.put_rows([CovisitRow("a", good.n, good.ref_s, good.ids, good.weights, 8, good.nexts)])
    assert set(g.scores(["a"], now_s=0.0)) == {"c"}


def test_an_owner_merges_deltas_into_an_undecoded_row() -> None:
    from streamrec.streams.covisit_wire import encode_row, peek_row

    cfg = CovisitConfig(window=2, **STILL)
    reference = CovisitGraph(cfg)
    learn(reference, ["a", "b"], ["a", "c"])
    seeded = CovisitGraph(cfg)
    first = CovisitGraph(cfg)
    learn(first, ["a", "b"])
    row = first.row("a")
    assert row is not None
    seeded.put_raw([(*peek_row(encode_row(row)), encode_row(row))])
    learn(seeded, ["a", "c"])
    assert seeded.row("a") == CovisitRow("a", 2.0, 0.0, ("b", "c"), (1.0, 1.0), 2, (1.0, 1.0))
    assert reference.row("a") == seeded.row("a")


def test_a_new_version_of_a_served_row_is_decoded_on_arrival_and_others_when_read() -> None:
    from streamrec.streams.covisit_wire import encode_row, peek_row

    def wire(row: CovisitRow, version: int) -> tuple[str, float, float, int, bytes]:
        data = encode_row(CovisitRow(row.item, row.n, row.ref_s, row.ids, row.weights, version, row.nexts))
        return (*peek_row(data), data)

    cfg = CovisitConfig(window=2, **STILL)
    working = CovisitGraph(cfg)
    learn(working, ["a", "b"], ["c", "d"])
    a, c = working.row("a"), working.row("c")
    assert a is not None and c is not None
    g = CovisitGraph(cfg)
    g.put_raw([wire(a, 1), wire(c, 1)])
    assert g.scores(["a"], now_s=0.0)  # "a" served; "c" not
    g.put_raw([wire(a, 2), wire(c, 2)])
    assert g._rows["a"].raw is None and g._rows["a"].version == 2  # decoded by the replica: it is being served
    assert g._rows["c"].raw is not None  # still waiting for a reader
    assert g.scores(["c"], now_s=0.0) == pytest.approx(working.scores(["c"], now_s=0.0))


def test_a_pair_is_learned_once_per_visit_not_once_per_event() -> None:
    cfg = CovisitConfig(window=20, backward_weight=0.5, **STILL)
    batch = DeltaBatch(cfg)
    # the user visited a, then b; b again (a repeated click): no new pair, no new transition, b's weight counts
    batch.observe("b", 1.0, 0.0, ["b", "a"])
    rows = {d.item: d for d in batch.deltas()}
    assert set(rows) == {"b"}
    assert rows["b"].n == 1.0 and rows["b"].pairs == {} and rows["b"].nexts == {}
    # a return to a after b and c: paired with what was visited since its last visit (c, b), not with z before it
    batch = DeltaBatch(cfg)
    batch.observe("a", 1.0, 0.0, ["c", "b", "a", "z"])
    rows = {d.item: d for d in batch.deltas()}
    assert rows["c"].pairs == {"a": 1.0} and rows["c"].nexts == {"a": 1.0}
    assert rows["b"].pairs == {"a": 0.5}
    assert "z" not in rows
    assert rows["a"].pairs == {"c": 0.5, "b": 0.25}


def test_repeated_clicks_do_not_inflate_the_pairs_they_repeat() -> None:
    once, repeated = CovisitGraph(CovisitConfig(**STILL)), CovisitGraph(CovisitConfig(**STILL))
    learn(once, ["x", "y"])
    learn(repeated, ["x", "y", "y", "y"])
    assert once.row("x") is not None and repeated.row("x") is not None
    assert once.row("x").weights == repeated.row("x").weights  # x -> y learned once either way
    assert repeated.weight("y", 0.0) == 3.0  # every event still counts in y's own weight
