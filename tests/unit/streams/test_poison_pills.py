"""The records of issue 15's table, one by one, against the decoders, the dead-letter codec and the decay math;
then generated JSON (hypothesis) against the decoders: InvalidMessage or a valid message, nothing else."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamrec.streams.deadletter import (
    KEEP_VALUE_BYTES,
    MAX_RECORD_BYTES,
    dead_letter_record,
    parse_dead_letter_headers,
)
from streamrec.streams.popularity import RecentPopularity
from streamrec.streams.schemas import (
    DEFAULT_LIMITS,
    DeadLetterReason,
    Event,
    EventType,
    InvalidMessage,
    ItemDeletion,
    ItemRecord,
    Recommendation,
    clamp_future_ts,
    decode_event,
    decode_item,
)

R = DeadLetterReason
POS: dict[str, Any] = {"record_ts_ms": 1_700_000_000_000, "topic": "events", "partition": 0, "offset": 7}
NOW_MS = 1_764_000_000_000
DAY_MS = 86_400_000


def event_reason(value: bytes, key: bytes | None = None) -> DeadLetterReason:
    with pytest.raises(InvalidMessage) as info:
        decode_event(value, key=key, **POS)
    return info.value.reason


def item_reason(key: bytes | None, value: bytes | None) -> DeadLetterReason:
    with pytest.raises(InvalidMessage) as info:
        decode_item(key, value)
    return info.value.reason


# --- the table of the issue -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 1_000, 10_000, 30_000])
def test_deep_nesting_is_invalid_json_not_a_recursion_error(depth: int) -> None:
    assert event_reason(b"[" * depth + b"]" * depth) is R.INVALID_JSON
    nested = b'{"user_id":"u1","type":"view","item_id":"x","extra":' + b"[" * depth + b"]" * depth + b"}"
    assert event_reason(nested) is R.INVALID_JSON
    assert event_reason(b"[" * depth) is R.INVALID_JSON  # not even closed
    item = b'{"item_id":"i1","title":"Teapot","tags":' + b"[" * depth + b"]" * depth + b"}"
    assert item_reason(b"i1", item) is R.INVALID_JSON


def test_nesting_within_the_limit_and_brackets_inside_strings_are_fine() -> None:
    deep_ok = {"user_id": "u1", "type": "view", "item_id": "x", "extra": json.loads("[" * 31 + "]" * 31)}
    assert decode_event(json.dumps(deep_ok).encode(), **POS).item_id == "x"
    brackets = {"user_id": "u1", "type": "search", "query": "[[[[" * 100 + '\\" {{{', "extra": {"a": "\\"}}
    assert decode_event(json.dumps(brackets).encode(), **POS).query == brackets["query"]


@pytest.mark.parametrize("field", ["user_id", "item_id", "query", "title", "event_id"])
@pytest.mark.parametrize("surrogate", ["\\ud800", "\\udc00", "\\udfff"])
def test_unpaired_surrogate_escapes_are_invalid_value(field: str, surrogate: str) -> None:
    doc = {"user_id": "u1", "type": "search" if field == "query" else "view", "item_id": "x", "query": "q"}
    raw = json.dumps({**doc, field: "PLACEHOLDER"}).replace("PLACEHOLDER", f"x{surrogate}y").encode()
    assert event_reason(raw) is R.INVALID_VALUE
    assert event_reason(raw, key=b"u1") is R.INVALID_VALUE  # keyed or not


def test_a_surrogate_pair_is_valid_unicode() -> None:
    raw = b'{"user_id": "u1", "type": "search", "query": "tea \\ud83c\\udf75"}'
    assert decode_event(raw, **POS).query == "tea \U0001f375"


@pytest.mark.parametrize("field", ["title", "description", "category", "tags"])
def test_items_with_surrogates_are_dead_lettered_not_fatal(field: str) -> None:
    value = "Teapot \\ud800"
    doc = (
        f'{{"item_id": "i1", "title": "Teapot", "{field}": '
        + (f'["{value}"]' if field == "tags" else f'"{value}"')
        + "}"
    )
    assert item_reason(b"i1", doc.encode()) is R.INVALID_VALUE


def test_megabyte_records_are_oversized() -> None:
    big = json.dumps({"user_id": "u1", "type": "search", "query": "x" * 1_000_000}).encode()
    assert event_reason(big) is R.OVERSIZED
    assert item_reason(b"i1", json.dumps({"item_id": "i1", "title": "y" * 1_000_000}).encode()) is R.OVERSIZED


def test_a_key_that_is_not_utf8_is_undecodable() -> None:
    value = b'{"user_id": "u1", "type": "view", "item_id": "x"}'
    assert event_reason(value, key=b"\xff\xfeu1") is R.UNDECODABLE
    assert event_reason(value, key=b"u2") is R.INVALID_VALUE  # a UTF-8 key that differs stays invalid_value
    assert item_reason(b"\xff", None) is R.UNDECODABLE


@pytest.mark.parametrize("ts", [NOW_MS + 30 * DAY_MS, 4_102_444_800_000, "2100-01-01T00:00:00Z"])
def test_future_timestamps_are_clamped_to_the_worker_clock(ts: int | str) -> None:
    raw = json.dumps({"user_id": "u1", "type": "view", "item_id": "x", "ts": ts}).encode()
    event = decode_event(raw, **POS)
    clamped = clamp_future_ts(event, NOW_MS)
    assert clamped.ts_ms == NOW_MS and clamped.item_id == "x"


def test_small_skew_is_kept_and_the_past_untouched() -> None:
    e = Event("u1", EventType.VIEW, "x", None, NOW_MS + DEFAULT_LIMITS.max_future_skew_ms, "e1")
    assert clamp_future_ts(e, NOW_MS) is e
    old = Event("u1", EventType.VIEW, "x", None, 0, "e2")
    assert clamp_future_ts(old, NOW_MS) is old


@pytest.mark.parametrize("first_s", [0.0, 4_102_444_800.0, 1e12])
def test_popularity_decay_never_overflows(first_s: float) -> None:
    pop = RecentPopularity(half_life_s=300)
    pop.add("far", 1.0, first_s)  # an accepted extreme timestamp first...
    pop.add("now", 2.0, NOW_MS / 1000)
    pop.add("past", 1.0, 0.0)
    for now in (0.0, NOW_MS / 1000, 4_102_444_800.0):  # ...then any clock
        top = pop.top(3, now)
        assert top and all(math.isfinite(s) and s >= 0 for _, s in top)


# --- dead letters that do not fit -------------------------------------------------------------------------


def test_a_record_too_large_to_copy_is_dead_lettered_truncated_with_size_and_hash() -> None:
    value = b"{" + b"x" * 1_048_000 + b"}"
    err = InvalidMessage(R.OVERSIZED, "too big")
    rec = dead_letter_record(b"u1", value, err, "events", 0, 5, now_ms=1)
    assert rec.key == b"u1" and rec.value == value[:KEEP_VALUE_BYTES]
    assert len(rec.value or b"") + sum(len(k) + len(v) for k, v in rec.headers) < MAX_RECORD_BYTES
    info = parse_dead_letter_headers(rec.headers)
    assert info.reason is R.OVERSIZED and info.truncated == ("value",)
    assert info.original_bytes == {"value": len(value)}
    assert info.original_sha256 == {"value": hashlib.sha256(value).hexdigest()}
    # a huge key as well
    key = b"k" * 600_000
    rec = dead_letter_record(key, value, err, "events", 0, 5, now_ms=1)
    info = parse_dead_letter_headers(rec.headers)
    assert info.truncated == ("key", "value") and len(rec.key or b"") == 1024
    assert info.original_bytes == {"key": len(key), "value": len(value)}


def test_a_record_that_fits_is_copied_unchanged() -> None:
    value = b"v" * 500_000
    rec = dead_letter_record(b"u1", value, InvalidMessage(R.OVERSIZED, "x"), "events", 0, 5, now_ms=1)
    assert rec.value == value and parse_dead_letter_headers(rec.headers).truncated == ()


# --- generated input --------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["\ud800", "x\udc00y", "2100-01-01T00:00:00", "9999-12-31T23:59:59+14:00", "view", "search"])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "user_id": _scalars,
        "type": _scalars | st.sampled_from([t.value for t in EventType]),
        "item_id": _scalars,
        "query": _scalars,
        "title": _scalars,
        "event_id": _scalars,
        "ts": _scalars | st.integers(min_value=-(10**16), max_value=10**16),
        "extra": _json,
    },
)


def _dumps(doc: Any) -> bytes:
    # json.dumps writes NaN/Infinity and lone surrogates as escapes: exactly the input a hostile producer sends
    return json.dumps(doc).encode()


def _deep(depth: int) -> bytes:
    return b'{"user_id": "u", "type": "view", "item_id": "i", "x": ' + b"[" * depth + b"]" * depth + b"}"


_raw = (
    _events.map(_dumps)
    | _json.map(_dumps)
    | st.binary(max_size=200)
    | st.integers(min_value=0, max_value=3_000).map(_deep)
    | st.sampled_from([b"NaN", b"-Infinity", b"[" * 5000, b'"\\ud800"', b"{}", b""])
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_raw, key=st.none() | st.binary(max_size=8) | st.just(b"u"))
def test_the_event_decoder_returns_an_event_or_raises_invalid_message(value: bytes, key: bytes | None) -> None:
    try:
        event = decode_event(value, key=key, **POS)
    except InvalidMessage as exc:
        assert isinstance(exc.reason, DeadLetterReason)
        return
    # a valid event is one the rest of the pipeline can carry: it encodes, and its output encodes
    assert DEFAULT_LIMITS.min_ts_ms <= event.ts_ms <= DEFAULT_LIMITS.max_ts_ms
    assert decode_event(event.to_json_bytes(), **POS) == event
    rec = Recommendation(event.user_id, event.event_id, (("i", 0.5),), "m", event.ts_ms, NOW_MS)
    rec.to_json_bytes()
    clamp_future_ts(event, NOW_MS).to_json_bytes()


_items = st.fixed_dictionaries(
    {},
    optional={
        "item_id": _scalars | st.just("i1"),
        "title": _scalars,
        "description": _scalars,
        "category": _scalars,
        "tags": st.lists(_scalars, max_size=3) | _scalars,
        "available": _scalars,
        "extra": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(value=st.none() | _items.map(_dumps) | _raw, key=st.none() | st.just(b"i1") | st.binary(max_size=6))
@example(value=b'{"item_id":"i1","available":false}', key=b"i1")  # no title: it wrote "title": "" and refused it
def test_the_item_decoder_returns_an_item_or_raises_invalid_message(value: bytes | None, key: bytes | None) -> None:
    try:
        item = decode_item(key, value)
    except InvalidMessage:
        return
    if isinstance(item, ItemRecord):
        item.to_json_bytes()
        assert decode_item(item.item_id.encode(), item.to_json_bytes()) == item
    else:
        assert isinstance(item, ItemDeletion) and item.item_id.encode("utf-8")
