from __future__ import annotations

import base64
import json
from dataclasses import replace

import numpy as np
import pytest

from streamrec.errors import ConfigError
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import (
    DecayedMeanStrategy,
    SequenceStrategy,
    SessionConfig,
    SessionState,
    SessionStateError,
    SessionUpdate,
    decay_factor,
    exclusions,
    make_strategy,
    session_text,
    update_mean,
)

D = 8
HL_MS = int(SessionConfig().half_life_s * 1000)  # the default half-life, ms


def unit(i: int) -> np.ndarray:
    v = np.zeros(D, dtype=np.float32)
    v[i] = 1.0
    return v


def event(
    n: int,
    etype: EventType = EventType.VIEW,
    item: str | None = None,
    ts: int = 0,
    query: str | None = None,
    title: str | None = None,
) -> Event:
    if etype is not EventType.SEARCH and item is None:
        item = f"i{n}"
    return Event("u1", etype, item, query, ts, f"e{n}", title)


def step(
    strategy: DecayedMeanStrategy,
    state: SessionState | None,
    ev: Event,
    vec: np.ndarray | None,
    title: str | None = None,
    encode: dict[str, np.ndarray] | None = None,
) -> SessionUpdate:
    plan = strategy.plan(state, ev, title=title, item_vector_known=vec is not None)
    rows = [(encode or {}).get(t, unit(len(t) % D)) for t in plan.texts]
    return strategy.apply(state, plan, item_vector=vec, text_vectors=rows)


def test_decay_factor() -> None:
    assert decay_factor(1_800_000, 0, 1800.0) == pytest.approx(0.5)
    assert decay_factor(2 * 1_800_000, 0, 1800.0) == pytest.approx(0.25)
    assert decay_factor(HL_MS, 0, HL_MS / 1000) == pytest.approx(0.5)
    assert decay_factor(5, None, 1800.0) == 1.0
    assert decay_factor(0, 10, 1800.0) == 1.0  # out of order: clamped, never grows


def test_formula_against_hand_computation() -> None:
    s = DecayedMeanStrategy(SessionConfig())
    # click (w=2) on e0 at t=0; purchase (w=6) on e1 one half-life later; view (w=1) on e2 at the same time
    u1 = step(s, None, event(1, EventType.CLICK, ts=0), unit(0))
    assert u1.state.weight == pytest.approx(2.0) and u1.state.mean_norm == pytest.approx(1.0)
    np.testing.assert_allclose(u1.query, unit(0))
    u2 = step(s, u1.state, event(2, EventType.PURCHASE, ts=HL_MS), unit(1))
    u3 = step(s, u2.state, event(3, EventType.VIEW, ts=HL_MS), unit(2))
    # by hand: S = 0.5*2*e0 + 6*e1 + 1*e2 = (1, 6, 1); W = 1 + 6 + 1 = 8
    S = np.array([1.0, 6.0, 1.0] + [0.0] * (D - 3))
    np.testing.assert_allclose(u3.state.embedding, S / np.linalg.norm(S), rtol=1e-6)
    assert u3.state.weight == pytest.approx(8.0)
    assert u3.state.mean_norm == pytest.approx(np.linalg.norm(S) / 8.0)
    assert u3.query is u3.state.embedding
    assert u3.state.last_ts_ms == HL_MS and u3.state.n_events == 3


def test_exact_mean_equal_weights_for_orthogonal_vectors() -> None:
    s = DecayedMeanStrategy()
    state = None
    for i in range(4):
        state = step(s, state, event(i, ts=0), unit(i)).state
    assert state is not None and state.embedding is not None
    np.testing.assert_allclose(state.embedding[:4], [0.5] * 4, rtol=1e-6)  # all four count the same
    assert state.mean_norm == pytest.approx(0.5)


def test_weight_halves_after_one_half_life_and_vectorless_event_only_decays() -> None:
    s = DecayedMeanStrategy()
    u1 = step(s, None, event(1, ts=0), unit(0))
    u2 = step(s, u1.state, event(2, ts=HL_MS, item="unknown"), None)  # no vector, no title
    assert u2.state.weight == pytest.approx(0.5 * u1.state.weight)
    np.testing.assert_array_equal(u2.state.embedding, u1.state.embedding)
    assert u2.state.recent_items == ("unknown", "i1")


def test_out_of_order_event_does_not_grow_history() -> None:
    s = DecayedMeanStrategy()
    u1 = step(s, None, event(1, ts=HL_MS), unit(0))
    u2 = step(s, u1.state, event(2, ts=0), unit(1))  # older than the last event
    assert u2.state.weight == pytest.approx(2.0)  # decay clamped to 1
    assert u2.state.last_ts_ms == HL_MS
    np.testing.assert_allclose(u2.state.embedding[:2], [2**-0.5] * 2, rtol=1e-6)


def test_opposite_vectors_cancel() -> None:
    emb, w, r = update_mean(unit(0), 1.0, 1.0, -unit(0), 1.0, 1.0)
    assert w == 2.0 and r == 0.0
    np.testing.assert_array_equal(emb, -unit(0))


def test_duplicate_is_idempotent() -> None:
    s = DecayedMeanStrategy()
    u1 = step(s, None, event(1, EventType.PURCHASE), unit(0))
    dup = step(s, u1.state, event(1, EventType.PURCHASE), unit(3))
    assert dup.duplicate and dup.state is u1.state
    np.testing.assert_array_equal(dup.query, u1.query)
    assert not u1.duplicate


def test_lists_bounded_and_exclusions() -> None:
    cfg = SessionConfig(max_recent=3, max_purchased=2, max_event_ids=4)
    s = DecayedMeanStrategy(cfg)
    state = None
    for n, item in enumerate(["a", "b", "a", "c", "d"]):
        etype = EventType.PURCHASE if item != "d" else EventType.VIEW
        state = step(s, state, event(n, etype, item=item), unit(n)).state
    assert state is not None
    assert state.recent_items == ("d", "c", "a")
    assert state.purchased == ("c", "a")
    assert state.last_event_ids == ("e4", "e3", "e2", "e1")
    assert exclusions(state, cfg) == {"a", "c", "d"}
    assert exclusions(state, replace(cfg, exclude_seen=False)) == {"a", "c"}
    assert exclusions(state, replace(cfg, exclude_seen=False, exclude_purchased=False)) == set()


def test_decayed_mean_texts_needed() -> None:
    s = DecayedMeanStrategy()
    search = event(1, EventType.SEARCH, query="red shoes")
    assert s.plan(None, search).texts == ("red shoes",)
    click = event(2, EventType.CLICK, title="From the event")
    assert s.plan(None, click, item_vector_known=True).texts == ()
    assert s.plan(None, click, item_vector_known=False).texts == ("From the event",)
    assert s.plan(None, click, title="Catalogue title").texts == ("Catalogue title",)
    assert s.plan(None, event(3)).texts == ()  # unknown item without a title: nothing to encode
    # the encoded query/title is the event's vector
    u = step(s, None, search, None, encode={"red shoes": unit(5)})
    np.testing.assert_allclose(u.query, unit(5))
    u = step(s, None, click, None, encode={"From the event": unit(4)})
    np.testing.assert_allclose(u.query, unit(4))
    with pytest.raises(ValueError, match="text vectors"):
        s.apply(None, s.plan(None, search), text_vectors=[])


def test_sequence_strategy_text_and_blend() -> None:
    cfg = SessionConfig(sequence_length=3, blend_alpha=0.25)
    s = SequenceStrategy(cfg)
    plan = s.plan(None, event(1, EventType.SEARCH, query="space  films"))
    assert plan.texts == ("space  films", "space films")  # own query, then the session text
    u1 = s.apply(None, plan, text_vectors=[unit(0), unit(1)])
    expected = 0.25 * unit(1) + 0.75 * unit(0)
    np.testing.assert_allclose(u1.query, expected / np.linalg.norm(expected), rtol=1e-6)
    # an item the index knows: only the session text is encoded, most recent first
    plan2 = s.plan(u1.state, event(2, EventType.CLICK), title="Alien (1979)", item_vector_known=True)
    assert plan2.texts == ("Alien (1979) ; space films",)
    u2 = s.apply(u1.state, plan2, item_vector=unit(2), text_vectors=[unit(3)])
    assert u2.state.recent_texts == (("item", "Alien (1979)"), ("query", "space  films"))
    # the state's mean is the decayed mean, the query blends in the sequence vector
    mean = u2.state.embedding
    assert mean is not None
    blended = 0.25 * unit(3) + 0.75 * mean
    np.testing.assert_allclose(u2.query, blended / np.linalg.norm(blended), rtol=1e-6)
    # last N only
    state = u2.state
    for n, t in enumerate(["B", "C", "D"], start=3):
        p = s.plan(state, event(n), title=t, item_vector_known=True)
        state = s.apply(state, p, item_vector=unit(n), text_vectors=[unit(0)] * len(p.texts)).state
    assert session_text(state, cfg) == "D ; C ; B"
    # duplicate: state unchanged, still a blended query from the current session text
    p = s.plan(state, event(5), title="D", item_vector_known=True)
    assert p.duplicate and p.texts == ("D ; C ; B",)
    dup = s.apply(state, p, item_vector=unit(0), text_vectors=[unit(7)])
    assert dup.duplicate and dup.state is state and dup.query is not None


def test_session_text_budget() -> None:
    cfg = SessionConfig(sequence_length=5, sequence_max_chars=12)
    st = SessionState(recent_texts=(("item", "abcde"), ("item", "fghij"), ("item", "zz")))
    assert session_text(st, cfg) == "abcde"  # "abcde ; fghij" is 13 > 12
    assert session_text(SessionState(recent_texts=(("query", "x" * 40),)), cfg) == "x" * 12
    assert session_text(SessionState(), cfg) == ""


def test_micro_batch_planning_for_one_user() -> None:
    """Two events of one user in a batch: plan both first (chaining plan.state), encode once, apply in order."""
    s = SequenceStrategy(SessionConfig(blend_alpha=0.5))
    e1, e2 = event(1, EventType.SEARCH, query="q1", ts=0), event(2, EventType.CLICK, ts=1)
    p1 = s.plan(None, e1)
    p2 = s.plan(p1.state, e2, title="T2", item_vector_known=True)
    assert p2.texts == ("T2 ; q1",)
    vecs = {t: unit(i) for i, t in enumerate(sorted({*p1.texts, *p2.texts}))}
    u1 = s.apply(None, p1, text_vectors=[vecs[t] for t in p1.texts])
    u2 = s.apply(u1.state, p2, item_vector=unit(6), text_vectors=[vecs[t] for t in p2.texts])
    # same as planning the second event on the real state
    p2b = s.plan(u1.state, e2, title="T2", item_vector_known=True)
    u2b = s.apply(u1.state, p2b, item_vector=unit(6), text_vectors=[vecs[t] for t in p2b.texts])
    np.testing.assert_array_equal(u2.query, u2b.query)
    assert u2.state.to_json_bytes() == u2b.state.to_json_bytes()


def test_apply_reuses_the_planned_bookkeeping_only_when_planned_from_the_same_lists() -> None:
    s = DecayedMeanStrategy(SessionConfig(max_recent=3))
    ev = event(9, EventType.PURCHASE, item="new", ts=5)
    planned_from = SessionState(recent_items=("a", "b"), n_events=2, last_event_ids=("e1", "e2"))
    plan = s.plan(planned_from, ev, item_vector_known=True)
    # the core's case: the state applied to carries the same lists (the vector part may differ)
    same_lists = replace(planned_from, embedding=unit(1), weight=1.0, mean_norm=1.0, last_ts_ms=0)
    reused = s.apply(same_lists, plan, item_vector=unit(2)).state
    assert reused.recent_items is plan.state.recent_items and reused.consumed is plan.state.consumed
    assert reused.recent_items == ("new", "a", "b") and reused.purchased == ("new",) and reused.n_events == 3
    assert reused.embedding is not None and reused.weight > 1.0  # the vector part is the applied state's
    # another state (other lists): its own bookkeeping, not the plan's
    other = SessionState(recent_items=("x", "new", "y"), purchased=("p",), n_events=7, last_event_ids=("e7",))
    own = s.apply(other, plan, item_vector=unit(2)).state
    assert own.recent_items == ("new", "x", "y") and own.purchased == ("new", "p") and own.n_events == 8
    assert own.last_event_ids == ("e9", "e7") and "new" in own.consumed
    # both equal what planning on that very state gives
    for state, got in ((same_lists, reused), (other, own)):
        fresh = s.apply(state, s.plan(state, ev, item_vector_known=True), item_vector=unit(2)).state
        assert got.to_json_bytes() == fresh.to_json_bytes()


def test_json_round_trip_and_size() -> None:
    s = DecayedMeanStrategy()  # records titles too
    rng = np.random.default_rng(0)
    state = None
    for n in range(5):
        v = rng.standard_normal(384).astype(np.float32)
        state = step(s, state, event(n, ts=n * 1000, title=f"Title {n} ü"), v / np.linalg.norm(v)).state
    assert state is not None
    data = state.to_json_bytes()
    back = SessionState.from_json_bytes(data, dim=384)
    assert back.to_json_bytes() == data
    np.testing.assert_array_equal(back.embedding, state.embedding)
    assert back.embedding is not None and back.embedding.dtype == np.float32
    assert (back.weight, back.recent_texts) == (state.weight, state.recent_texts)
    assert back.last_event_ids == state.last_event_ids
    assert len(data) < 3000
    empty = SessionState()
    assert SessionState.from_json_bytes(empty.to_json_bytes()).embedding is None


def _corrupt(doc_patch: dict[str, object]) -> bytes:
    good = json.loads(SessionState(embedding=unit(0), weight=1.0, mean_norm=1.0, last_ts_ms=5).to_json_bytes())
    return json.dumps({**good, **doc_patch}).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x03}q\x00.",  # a pickle
        b"not json",
        b"[]",
        _corrupt({"v": 99}),
        _corrupt({"consumed": "!!notbase64"}),
        _corrupt({"consumed": base64.b64encode(b"abc").decode()}),  # not 8-byte hashes
        _corrupt({"last_list": [1]}),
        _corrupt({"embedding": "!!notbase64"}),
        _corrupt({"embedding": base64.b64encode(b"abc").decode()}),
        _corrupt({"embedding": base64.b64encode(np.full(D, 3.0, "<f4").tobytes()).decode()}),  # not unit
        _corrupt({"embedding": base64.b64encode(np.full(D, np.nan, "<f4").tobytes()).decode()}),
        _corrupt({"weight": -1}),
        _corrupt({"weight": "1"}),
        _corrupt({"mean_norm": 3.0}),
        _corrupt({"last_ts_ms": 1.5}),
        _corrupt({"recent_items": "abc"}),
        _corrupt({"recent_items": [1]}),
        _corrupt({"recent_texts": [["item"]]}),
        _corrupt({"n_events": -1}),
        _corrupt({"n_events": True}),
        json.dumps({"v": 1}).encode(),
    ],
)
def test_corrupt_state_refused(data: bytes) -> None:
    with pytest.raises(SessionStateError):
        SessionState.from_json_bytes(data)


def test_dimension_checked() -> None:
    with pytest.raises(SessionStateError, match="dimension"):
        SessionState.from_json_bytes(_corrupt({}), dim=384)


def test_registry_and_config_validation() -> None:
    assert make_strategy("decayed_mean").name == "decayed_mean"
    seq = make_strategy("sequence", SessionConfig(sequence_length=2))
    assert isinstance(seq, SequenceStrategy) and seq.config.sequence_length == 2
    with pytest.raises(ConfigError, match="unknown session strategy"):
        make_strategy("lstm")
    for bad in ({"half_life_s": 0}, {"purchase_weight": -1.0}, {"blend_alpha": 1.5}, {"max_recent": -1}):
        with pytest.raises(ConfigError):
            SessionConfig(**bad)  # type: ignore[arg-type]
    cfg = SessionConfig()
    assert [cfg.weight_of(t) for t in EventType] == [1.0, 2.0, 4.0, 6.0, 1.5]
