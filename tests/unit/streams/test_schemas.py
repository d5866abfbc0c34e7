from __future__ import annotations

import json
from typing import Any

import pytest

from streamrec.errors import StreamrecError
from streamrec.streams.deadletter import (
    HEADER_REASON,
    DeadLetterHeaderError,
    dead_letter_headers,
    dead_letter_record,
    parse_dead_letter_headers,
)
from streamrec.streams.schemas import (
    DeadLetterReason,
    Event,
    EventType,
    InvalidMessage,
    ItemDeletion,
    ItemRecord,
    Limits,
    Recommendation,
    decode_event,
    decode_item,
    decode_recommendation,
)

R = DeadLetterReason
POS = {"record_ts_ms": 1_700_000_000_000, "topic": "events", "partition": 3, "offset": 41}


def ev(doc: Any, **kw: Any) -> Event:
    value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_event(value, **{**POS, **kw})


def reason_of(fn: Any, *args: Any, **kw: Any) -> DeadLetterReason:
    with pytest.raises(InvalidMessage) as info:
        fn(*args, **kw)
    assert isinstance(info.value, StreamrecError)
    assert info.value.detail
    return info.value.reason


def test_reason_values_are_stable() -> None:
    assert [r.value for r in R] == [
        "undecodable",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "unknown_type",
        "oversized",
        "invalid_value",
        "processing_error",
    ]


def test_event_defaults_from_record() -> None:
    e = ev({"user_id": "u1", "type": "click", "item_id": "i9"})
    assert e == Event("u1", EventType.CLICK, "i9", None, 1_700_000_000_000, "events:3:41", None)


def test_event_all_fields_and_extra_fields_ignored() -> None:
    e = ev(
        {
            "user_id": "u1",
            "type": "purchase",
            "item_id": "i9",
            "ts": 1234,
            "event_id": "e-1",
            "title": "A thing",
            "orig_ts": 5,
            "future_field": {"x": [1]},
        }
    )
    assert (e.type, e.ts_ms, e.event_id, e.title) == (EventType.PURCHASE, 1234, "e-1", "A thing")


def test_search_event_needs_query_not_item() -> None:
    e = ev({"user_id": "u1", "type": "search", "query": "red shoes"})
    assert (e.item_id, e.query) == (None, "red shoes")
    assert reason_of(ev, {"user_id": "u1", "type": "search"}) is R.MISSING_FIELD
    assert reason_of(ev, {"user_id": "u1", "type": "search", "query": "   "}) is R.INVALID_VALUE
    assert reason_of(ev, {"user_id": "u1", "type": "view"}) is R.MISSING_FIELD
    assert reason_of(ev, {"user_id": "u1", "type": "view", "item_id": None}) is R.MISSING_FIELD


@pytest.mark.parametrize(
    ("ts", "want"),
    [
        (1_700_000_000_123, 1_700_000_000_123),
        (1_700_000_000_123.9, 1_700_000_000_123),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20.5+00:00", 1_700_000_000_500),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),  # no offset: UTC
        (0, 0),
    ],
)
def test_ts_forms(ts: Any, want: int) -> None:
    assert ev({"user_id": "u", "type": "view", "item_id": "i", "ts": ts}).ts_ms == want


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (-1, R.INVALID_VALUE),
        (5_000_000_000_000, R.INVALID_VALUE),  # year 2128
        ("yesterday", R.INVALID_VALUE),
        (True, R.WRONG_TYPE),
        ([1], R.WRONG_TYPE),
        ({"ms": 1}, R.WRONG_TYPE),
    ],
)
def test_bad_ts(ts: Any, reason: DeadLetterReason) -> None:
    assert reason_of(ev, {"user_id": "u", "type": "view", "item_id": "i", "ts": ts}) is reason


def test_no_ts_and_no_record_timestamp() -> None:
    assert reason_of(ev, {"user_id": "u", "type": "view", "item_id": "i"}, record_ts_ms=-1) is R.MISSING_FIELD


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe{}", R.UNDECODABLE),
        (b'{"user_id": "u", ', R.INVALID_JSON),
        (b'{"user_id": "u", "type": "view", "item_id": "i", "ts": NaN}', R.INVALID_JSON),
        (b"Infinity", R.INVALID_JSON),
        (b"[1, 2]", R.NOT_AN_OBJECT),
        (b'"text"', R.NOT_AN_OBJECT),
        (b"null", R.NOT_AN_OBJECT),
        (b'{"type": "view", "item_id": "i"}', R.MISSING_FIELD),
        (b'{"user_id": "u", "item_id": "i"}', R.MISSING_FIELD),
        (b'{"user_id": 7, "type": "view", "item_id": "i"}', R.WRONG_TYPE),
        (b'{"user_id": "u", "type": 1, "item_id": "i"}', R.WRONG_TYPE),
        (b'{"user_id": "u", "type": "view", "item_id": 12}', R.WRONG_TYPE),
        (b'{"user_id": "u", "type": "view", "item_id": "i", "event_id": 3}', R.WRONG_TYPE),
        (b'{"user_id": "u", "type": "view", "item_id": "i", "title": ["x"]}', R.WRONG_TYPE),
        (b'{"user_id": "u", "type": "like", "item_id": "i"}', R.UNKNOWN_TYPE),
        (b'{"user_id": "u", "type": "VIEW", "item_id": "i"}', R.UNKNOWN_TYPE),
        (b'{"user_id": "", "type": "view", "item_id": "i"}', R.INVALID_VALUE),
        (b'{"user_id": "u", "type": "view", "item_id": " "}', R.INVALID_VALUE),
        (b'{"user_id": "u", "type": "view", "item_id": "i", "event_id": ""}', R.INVALID_VALUE),
    ],
)
def test_event_reasons(value: bytes, reason: DeadLetterReason) -> None:
    assert reason_of(ev, value) is reason


def test_null_value_event() -> None:
    assert reason_of(decode_event, None, **POS) is R.NOT_AN_OBJECT


def test_limits() -> None:
    limits = Limits()
    ok = {"user_id": "u" * 256, "type": "search", "query": "q" * 2000, "title": "t" * 2000, "event_id": "e" * 256}
    assert ev(ok).user_id == "u" * 256
    for name, size in [("user_id", 257), ("query", 2001), ("title", 2001), ("event_id", 257)]:
        assert reason_of(ev, {**ok, name: "x" * size}) is R.OVERSIZED, name
    big = json.dumps({**ok, "padding": "p" * limits.max_message_bytes}).encode()
    assert reason_of(ev, big) is R.OVERSIZED
    small = Limits(max_message_bytes=100, max_id_chars=4)
    assert reason_of(ev, {"user_id": "uuuuu", "type": "view", "item_id": "i"}, limits=small) is R.OVERSIZED
    assert reason_of(ev, {"user_id": "u", "type": "view", "item_id": "i", "x": "y" * 100}, limits=small) is R.OVERSIZED


def test_key_checked_when_given() -> None:
    doc = {"user_id": "u1", "type": "view", "item_id": "i"}
    assert ev(doc, key=b"u1").user_id == "u1"
    assert ev(doc, key=None).user_id == "u1"
    assert reason_of(ev, doc, key=b"u2") is R.INVALID_VALUE


def test_event_round_trip() -> None:
    e = Event("ü", EventType.SEARCH, None, "naïve query", 12, "id-1", "T")
    assert decode_event(e.to_json_bytes(), **POS) == e


# --- items ---------------------------------------------------------------------------------------


def it(doc: Any, key: bytes | None = b"i1") -> ItemRecord | ItemDeletion:
    value = doc if isinstance(doc, bytes) or doc is None else json.dumps(doc).encode()
    return decode_item(key, value)


def test_item_full_and_defaults() -> None:
    full = it(
        {
            "item_id": "i1",
            "title": "T",
            "description": "D",
            "category": "C",
            "tags": ["a", "b"],
            "available": False,
            "extra": 1,
        }
    )
    assert full == ItemRecord("i1", "T", "D", "C", ("a", "b"), False)
    assert it({"item_id": "i1", "title": "T"}) == ItemRecord("i1", "T")
    assert it({"item_id": "i1", "title": "T", "available": None}) == ItemRecord("i1", "T")
    # a withdrawal needs no title
    assert it({"item_id": "i1", "available": False}) == ItemRecord("i1", "", available=False)


def test_item_tombstone() -> None:
    assert it(None) == ItemDeletion("i1")
    assert reason_of(it, None, key=None) is R.MISSING_FIELD
    assert reason_of(it, None, key=b"\xff") is R.UNDECODABLE


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        ({"item_id": "i1", "title": "T"}, None, R.MISSING_FIELD),
        ({"item_id": "i1", "title": "T"}, b"i2", R.INVALID_VALUE),
        ({"item_id": "i1"}, b"i1", R.MISSING_FIELD),
        ({"item_id": "i1", "title": ""}, b"i1", R.INVALID_VALUE),
        ({"title": "T"}, b"i1", R.MISSING_FIELD),
        ({"item_id": 1, "title": "T"}, b"i1", R.WRONG_TYPE),
        ({"item_id": "i1", "title": "T", "available": "no"}, b"i1", R.WRONG_TYPE),
        ({"item_id": "i1", "title": "T", "tags": "a"}, b"i1", R.WRONG_TYPE),
        ({"item_id": "i1", "title": "T", "tags": [1]}, b"i1", R.WRONG_TYPE),
        ({"item_id": "i1", "title": "T", "tags": ["t"] * 101}, b"i1", R.OVERSIZED),
        ({"item_id": "i1", "title": "T", "description": "d" * 10_001}, b"i1", R.OVERSIZED),
        ({"item_id": "i1", "title": "t" * 2001}, b"i1", R.OVERSIZED),
        ({"item_id": "i1", "title": "T", "category": 5}, b"i1", R.WRONG_TYPE),
        (b"\xc3\x28", b"i1", R.UNDECODABLE),
        (b"{", b"i1", R.INVALID_JSON),
        (b"[]", b"i1", R.NOT_AN_OBJECT),
    ],
)
def test_item_reasons(doc: Any, key: bytes | None, reason: DeadLetterReason) -> None:
    assert reason_of(it, doc, key=key) is reason


def test_item_description_limit_ok() -> None:
    item = it({"item_id": "i1", "title": "T", "description": "d" * 10_000})
    assert isinstance(item, ItemRecord)
    assert item.description is not None and len(item.description) == 10_000


def test_item_round_trip() -> None:
    item = ItemRecord("i1", "Toy Story (1995)", "desc", "Animation", ("1990s",), True)
    assert decode_item(b"i1", item.to_json_bytes()) == item


# --- recommendations ---------------------------------------------------------------------------


def test_recommendation_json() -> None:
    import numpy as np

    rec = Recommendation(
        "u1",
        "e1",
        (("i1", float(np.float32(0.5))), ("i2", 0.25)),
        "minilm@abc",
        10,
        12,
        {"encode": 1.23456, "index": 0.1},
        "decayed_mean",
        False,
    )
    doc = json.loads(rec.to_json_bytes())
    assert doc == {
        "user_id": "u1",
        "event_id": "e1",
        "items": [{"item_id": "i1", "score": 0.5}, {"item_id": "i2", "score": 0.25}],
        "model": "minilm@abc",
        "event_ts": 10,
        "emitted_ts": 12,
        "latency_ms": {"encode": 1.235, "index": 0.1},
        "strategy": "decayed_mean",
        "fallback": False,
    }
    back = decode_recommendation(rec.to_json_bytes())
    assert back.items == rec.items and back.user_id == "u1" and back.latency_ms["encode"] == 1.235
    assert reason_of(decode_recommendation, b'{"user_id": "u"}') is R.MISSING_FIELD


# --- dead letters --------------------------------------------------------------------------------


def test_dead_letter_headers_round_trip() -> None:
    err = InvalidMessage(R.UNKNOWN_TYPE, "unknown event type 'like'" + "x" * 2000)
    rec = dead_letter_record(b"u1", b"raw", err, "events", 2, 99, now_ms=1000, source_ts_ms=900, worker="w1")
    assert (rec.key, rec.value) == (b"u1", b"raw")
    assert rec.headers[0] == (HEADER_REASON, b"unknown_type")
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in rec.headers)
    info = parse_dead_letter_headers([*rec.headers, ("other", b"x")])
    got = (info.reason, info.source_topic, info.partition, info.offset, info.ts_ms, info.source_ts_ms, info.worker)
    assert got == (R.UNKNOWN_TYPE, "events", 2, 99, 1000, 900, "w1")
    assert len(info.detail) == 1000 and info.detail.startswith("unknown event type")
    minimal = parse_dead_letter_headers(dead_letter_headers(R.OVERSIZED, "big", "items", 0, 1, now_ms=5))
    assert (minimal.source_ts_ms, minimal.worker) == (None, None)
    with pytest.raises(DeadLetterHeaderError):
        parse_dead_letter_headers([("streamrec.dlq.reason", b"nope")])
