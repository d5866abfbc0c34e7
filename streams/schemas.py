"""Message schemas of the four topics, their decoders, and the reasons a message is dead-lettered.

All messages are UTF-8 JSON objects. ``null`` is the same as an absent field. **Unknown extra fields
are ignored** (forward compatibility: producers may add fields, e.g. the replay's ``orig_ts``, and
old workers keep working). Decoding never raises anything but :class:`InvalidMessage`, whose
``reason`` (a :class:`DeadLetterReason`) is a stable string used as a metric label and as the
``streamrec.dlq.reason`` header of the dead-letter record.

``events`` (key: user_id)
-------------------------

| field      | type                     | required         | notes                                             |
| ---------- | ------------------------ | ---------------- | ------------------------------------------------- |
| `user_id`  | string, 1..256 chars     | yes              | must equal the record key when the key is checked |
| `type`     | `view` `click` `add_to_cart` `purchase` `search` | yes |                                      |
| `item_id`  | string, 1..256 chars     | all but `search` |                                                   |
| `query`    | string, 1..2,000 chars   | `search`         | not blank                                         |
| `ts`       | epoch ms (int or float) or ISO-8601 string | no | default: the record timestamp (1)   |
| `event_id` | string, 1..256 chars     | no               | default `"<topic>:<partition>:<offset>"` (2)      |
| `title`    | string, <= 2,000 chars   | no               | names an item the catalogue has not seen yet      |

```json
{"user_id": "u42", "type": "click", "item_id": "sku-1", "ts": 1763800000000, "event_id": "e-1"}
{"user_id": "u42", "type": "search", "query": "red running shoes", "ts": "2025-11-22T08:00:00Z"}
```

(1) an ISO-8601 string without a UTC offset is read as UTC; ``ts`` must lie in 0 .. 2100-01-01
(``Limits.min_ts_ms`` / ``max_ts_ms``), else ``invalid_value``; a ``ts`` more than 5 minutes ahead of the
worker's clock is clamped to the worker's clock (:func:`clamp_future_ts`). (2) stable across re-deliveries of
the same record, so a replayed record is recognised as a duplicate.

``items`` (key: item_id, compacted)
-----------------------------------

| field         | type                          | required | notes                                      |
| ------------- | ----------------------------- | -------- | ------------------------------------------ |
| `item_id`     | string, 1..256 chars          | yes      | must equal the record key                  |
| `title`       | string, 1..2,000 chars        | yes, unless `available` is false |                    |
| `description` | string, <= 10,000 chars       | no       |                                            |
| `category`    | string, <= 2,000 chars        | no       |                                            |
| `tags`        | list of strings (<= 100, each <= 256 chars) | no |                                  |
| `available`   | boolean                       | no       | default true; false takes the item out of recommendations |

A record with a ``null`` value (a tombstone) deletes the item named by its key.

```json
{"item_id": "1", "title": "Toy Story (1995)", "category": "Animation, Children's, Comedy", "tags": ["1990s"]}
```

``recommendations`` (key: user_id)
----------------------------------

| field        | type                           | notes                                                   |
| ------------ | ------------------------------ | ------------------------------------------------------- |
| `user_id`    | string                         |                                                         |
| `event_id`   | string                         | the event this answers                                  |
| `items`      | list of `{"item_id", "score"}` | K of them, best first                                   |
| `model`      | string                         | encoder name + manifest hash                            |
| `event_ts`   | epoch ms                       | the event's `ts`                                        |
| `emitted_ts` | epoch ms                       | when the worker produced this message                   |
| `latency_ms` | object: stage -> ms            | per-stage breakdown: `queue` `decode` `state` `encode` `index` |
| `strategy`   | string or null                 | the session strategy that produced the query vector     |
| `fallback`   | boolean                        | true: no usable session vector, items are the fallback  |

```json
{"user_id": "u42", "event_id": "e-1", "items": [{"item_id": "sku-9", "score": 0.83}], "model": "minilm-int8@3f2a",
 "event_ts": 1763800000000, "emitted_ts": 1763800000012, "latency_ms": {"encode": 2.1, "index": 0.2},
 "strategy": "decayed_mean", "fallback": false}
```

``dead-letter`` (same key as the source record): the original value bytes, reasons in headers
(see :mod:`streamrec.streams.deadletter`).

Dead-letter reasons (:class:`DeadLetterReason`)
-----------------------------------------------

| reason          | meaning                                                                   |
| --------------- | ------------------------------------------------------------------------- |
| `undecodable`   | value (or key) is not UTF-8                                               |
| `invalid_json`  | not JSON (also: NaN / Infinity literals, nesting over ``Limits.max_depth``) |
| `not_an_object` | JSON, but not an object (or a null value on `events`)                     |
| `missing_field` | a required field is absent or null (or an `items` record has no key: only  |
|                 | possible on a topic that is not compacted, as the broker refuses those)  |
| `wrong_type`    | a field has the wrong JSON type (e.g. a number where a string belongs)    |
| `unknown_type`  | `type` is not one of the event types                                      |
| `oversized`     | the whole message is over `Limits.max_message_bytes`, or a field over its limit |
| `invalid_value` | unusable value: empty id, blank query, bad `ts`, record key != user_id / item_id, |
|                 | a string that is not valid Unicode (an unpaired ``\\udXXX`` surrogate escape)    |
| `processing_error` | valid input whose processing raised; the exception type and a short detail |
|                 | are in the detail header (a bug: please report it with the record)        |
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from streamrec.errors import StreamrecError

__all__ = [
    "DEFAULT_LIMITS",
    "DeadLetterReason",
    "Event",
    "EventType",
    "InvalidMessage",
    "ItemDeletion",
    "ItemRecord",
    "Limits",
    "Recommendation",
    "clamp_future_ts",
    "decode_event",
    "decode_item",
    "decode_recommendation",
]


class DeadLetterReason(StrEnum):
    """Why a message was rejected. The values are stable: metric labels and header values."""

    UNDECODABLE = "undecodable"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_TYPE = "unknown_type"
    OVERSIZED = "oversized"
    INVALID_VALUE = "invalid_value"
    PROCESSING_ERROR = "processing_error"


class InvalidMessage(StreamrecError):
    """A message that cannot be used; it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    SEARCH = "search"


_R = DeadLetterReason
_EVENT_TYPES: dict[str, EventType] = {t.value: t for t in EventType}


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and range limits applied by the decoders."""

    max_message_bytes: int = 64 * 1024
    max_id_chars: int = 256
    max_text_chars: int = 2_000  # query, title, category
    max_description_chars: int = 10_000
    max_tags: int = 100
    max_depth: int = 32  # JSON nesting (objects and arrays); our messages need 3
    min_ts_ms: int = 0
    max_ts_ms: int = 4_102_444_800_000  # 2100-01-01T00:00:00Z
    max_future_skew_ms: int = 300_000  # clock-skew policy: see clamp_future_ts


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded shopper event. ``item_id`` is set for all types but search, ``query`` for search."""

    user_id: str
    type: EventType
    item_id: str | None
    query: str | None
    ts_ms: int
    event_id: str
    title: str | None = None

    def to_json_bytes(self) -> bytes:
        """The wire form (``ts`` as epoch ms); ``decode_event`` of it gives back an equal Event."""
        doc: dict[str, Any] = {"user_id": self.user_id, "type": self.type.value}
        if self.item_id is not None:
            doc["item_id"] = self.item_id
        if self.query is not None:
            doc["query"] = self.query
        doc["ts"] = self.ts_ms
        doc["event_id"] = self.event_id
        if self.title is not None:
            doc["title"] = self.title
        return _dumps(doc)


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """A catalogue entry. ``available=False`` takes it out of recommendations like a deletion."""

    item_id: str
    title: str
    description: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    available: bool = True

    def to_json_bytes(self) -> bytes:
        doc: dict[str, Any] = {"item_id": self.item_id}
        if self.title or self.available:  # an unavailable item may have none: then none is written (it reads back)
            doc["title"] = self.title
        if self.description is not None:
            doc["description"] = self.description
        if self.category is not None:
            doc["category"] = self.category
        if self.tags:
            doc["tags"] = list(self.tags)
        if not self.available:
            doc["available"] = False
        return _dumps(doc)


@dataclass(frozen=True, slots=True)
class ItemDeletion:
    """A tombstone on the items topic: the item named by the record key is gone."""

    item_id: str


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One output message: the top-K items for ``user_id`` after event ``event_id``."""

    user_id: str
    event_id: str
    items: tuple[tuple[str, float], ...]
    model: str
    event_ts: int
    emitted_ts: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    strategy: str | None = None
    fallback: bool = False

    def to_json_bytes(self) -> bytes:
        # Scores and latencies are rounded: 6 and 3 decimals are plenty and keep messages small.
        return _dumps(
            {
                "user_id": self.user_id,
                "event_id": self.event_id,
                "items": [{"item_id": i, "score": round(float(s), 6)} for i, s in self.items],
                "model": self.model,
                "event_ts": self.event_ts,
                "emitted_ts": self.emitted_ts,
                "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
                "strategy": self.strategy,
                "fallback": self.fallback,
            }
        )


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _dumps(doc: dict[str, Any]) -> bytes:
    return _ENCODER.encode(doc).encode("utf-8")


# --- decoding -------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_object(value: bytes, limits: Limits, what: str) -> dict[str, Any]:
    if len(value) > limits.max_message_bytes:
        raise InvalidMessage(_R.OVERSIZED, f"{what} is {len(value)} bytes, over the {limits.max_message_bytes} limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(_R.UNDECODABLE, f"{what} is not UTF-8: {exc.reason} at {exc.start}") from None
    # depth <= the number of opening brackets: a flat message (an event has one) skips the scan
    if text.count("{") + text.count("[") > limits.max_depth and _max_depth(text, limits.max_depth) > limits.max_depth:
        raise InvalidMessage(
            _R.INVALID_JSON, f"{what} nests arrays/objects over {limits.max_depth} levels deep (the limit)"
        )
    try:
        doc = _DECODER.decode(text)
    except ValueError as exc:  # json.JSONDecodeError and the NaN/Infinity rejection
        raise InvalidMessage(_R.INVALID_JSON, f"{what} is not JSON: {exc}") from None
    except RecursionError:  # belt and braces: _max_depth counts brackets outside strings
        raise InvalidMessage(_R.INVALID_JSON, f"{what} nests too deeply to decode") from None
    if not isinstance(doc, dict):
        raise InvalidMessage(_R.NOT_AN_OBJECT, f"{what} is a JSON {type(doc).__name__}, not an object")
    return doc


_STRUCTURAL = re.compile(r'[\[\]{}"\\]')


def _max_depth(text: str, stop_above: int) -> int:
    """The deepest nesting of arrays/objects outside JSON strings (stops counting above ``stop_above``).

    Checked before parsing: the json module recurses once per level and raises RecursionError near 1,000
    levels. Only brackets, quotes and backslashes are visited (found by a regex), so a flat message costs
    a few microseconds and the scan is linear in the worst case.
    """
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position of the character a backslash escapes
    for m in _STRUCTURAL.finditer(text):
        c, at = m.group(), m.start()
        if in_string:
            if at == escaped_at:
                continue
            if c == "\\":
                escaped_at = at + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "[" or c == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        elif c == "]" or c == "}":
            depth -= 1
    return deepest


def _str(doc: dict[str, Any], name: str, max_chars: int, *, required: bool, empty_ok: bool = False) -> str | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise InvalidMessage(_R.MISSING_FIELD, f"field {name!r} is required")
        return None
    if type(v) is not str:
        raise InvalidMessage(_R.WRONG_TYPE, f"field {name!r} must be a string, not {_jtype(v)}")
    if len(v) > max_chars:
        raise InvalidMessage(_R.OVERSIZED, f"field {name!r} has {len(v)} chars, over {max_chars}")
    _check_unicode(v, f"field {name!r}")
    if not empty_ok and not v.strip():
        raise InvalidMessage(_R.INVALID_VALUE, f"field {name!r} is empty")
    return v


def _check_unicode(v: str, what: str) -> None:
    """Reject strings that are not Unicode text: JSON allows ``\\ud800`` escapes (unpaired surrogates), which
    cannot be encoded as UTF-8 again (the tokenizer and every output would fail on them)."""
    if v.isascii():
        return
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            _R.INVALID_VALUE,
            f"{what} is not valid Unicode: unpaired surrogate {v[exc.start]!r} at {exc.start}",
        ) from None


def _jtype(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _ts_ms(v: object, limits: Limits) -> int:
    if isinstance(v, bool):
        raise InvalidMessage(_R.WRONG_TYPE, "field 'ts' must be epoch ms or an ISO-8601 string, not boolean")
    if isinstance(v, int):
        ts = v
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidMessage(_R.INVALID_VALUE, "field 'ts' is not finite")
        ts = int(v)
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise InvalidMessage(_R.INVALID_VALUE, f"field 'ts' is not an ISO-8601 date-time: {v[:64]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = round(dt.timestamp() * 1000)
    else:
        raise InvalidMessage(_R.WRONG_TYPE, f"field 'ts' must be epoch ms or an ISO-8601 string, not {_jtype(v)}")
    if not limits.min_ts_ms <= ts <= limits.max_ts_ms:
        raise InvalidMessage(
            _R.INVALID_VALUE,
            f"field 'ts' = {ts} ms is outside [{limits.min_ts_ms}, {limits.max_ts_ms}] (epoch milliseconds expected)",
        )
    return ts


def decode_event(
    value: bytes | None,
    *,
    record_ts_ms: int,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Event:
    """Decode an ``events`` record value, or raise :class:`InvalidMessage`.

    ``record_ts_ms`` (the Kafka record timestamp) is the default ``ts``; ``topic:partition:offset``
    the default ``event_id``. If ``key`` is given (not None) it must equal the UTF-8 ``user_id``:
    the session state of a user lives on the partition its key hashes to, so an event keyed by
    anything else would update state on the wrong partition (``invalid_value``). A null key is not
    checked (pass ``key=None`` to skip the check altogether).
    """
    if key is not None:
        if len(key) > limits.max_id_chars * 4:
            raise InvalidMessage(_R.OVERSIZED, f"event key is {len(key)} bytes, over {limits.max_id_chars * 4}")
        try:
            key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(_R.UNDECODABLE, f"event key is not UTF-8: {exc.reason} at {exc.start}") from None
    if value is None:
        raise InvalidMessage(_R.NOT_AN_OBJECT, "event value is null")
    doc = _parse_object(value, limits, "event")
    user_id = _str(doc, "user_id", limits.max_id_chars, required=True)
    assert user_id is not None
    raw_type = doc.get("type")
    if raw_type is None:
        raise InvalidMessage(_R.MISSING_FIELD, "field 'type' is required")
    if type(raw_type) is not str:
        raise InvalidMessage(_R.WRONG_TYPE, f"field 'type' must be a string, not {_jtype(raw_type)}")
    etype = _EVENT_TYPES.get(raw_type)
    if etype is None:
        raise InvalidMessage(
            _R.UNKNOWN_TYPE, f"unknown event type {raw_type[:64]!r} (expected one of {sorted(_EVENT_TYPES)})"
        )
    is_search = etype is EventType.SEARCH
    item_id = _str(doc, "item_id", limits.max_id_chars, required=not is_search)
    query = _str(doc, "query", limits.max_text_chars, required=is_search)
    title = _str(doc, "title", limits.max_text_chars, required=False, empty_ok=True) or None
    raw_ts = doc.get("ts")
    if raw_ts is None:
        if record_ts_ms < 0:
            raise InvalidMessage(_R.MISSING_FIELD, "no 'ts' field and no record timestamp")
        ts_ms = record_ts_ms
    else:
        ts_ms = _ts_ms(raw_ts, limits)
    event_id = _str(doc, "event_id", limits.max_id_chars, required=False)
    if event_id is None:
        event_id = f"{topic}:{partition}:{offset}"
    if key is not None and key != user_id.encode("utf-8"):
        raise InvalidMessage(
            _R.INVALID_VALUE,
            f"record key {key[:64]!r} differs from user_id {user_id[:64]!r} (key events by user_id)",
        )
    return Event(user_id, etype, item_id, query, ts_ms, event_id, title)


def clamp_future_ts(event: Event, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Clock-skew policy: an event stamped more than ``limits.max_future_skew_ms`` after ``now_ms`` (the
    worker's clock when it took the event) is **clamped** to ``now_ms``; returns ``event`` itself otherwise.

    Clamped, not rejected: the interaction is real and worth answering -- only the producer's clock is wrong,
    and an event cannot have happened after the worker received it, so "now" is the best estimate. Rejecting
    would leave every user of a skewed client without recommendations. Left unclamped, one far-future
    timestamp would become the session's ``last_ts`` and freeze its decay (every later event would look
    older), and would push the popularity clock ahead of real time. Skew within the tolerance is kept as
    stamped, so clocks that are slightly ahead do not reorder a session.
    """
    if event.ts_ms - now_ms > limits.max_future_skew_ms:
        return replace(event, ts_ms=now_ms)
    return event


def decode_item(
    key: bytes | None, value: bytes | None, *, limits: Limits = DEFAULT_LIMITS
) -> ItemRecord | ItemDeletion:
    """Decode an ``items`` record: a tombstone (null value) is an :class:`ItemDeletion` of its key.

    The key is required (the topic is compacted by it) and must equal ``item_id``. ``title`` may be
    left out only when ``available`` is false.
    """
    if key is None:
        raise InvalidMessage(_R.MISSING_FIELD, "items record has no key (key it by item_id)")
    if len(key) > limits.max_id_chars * 4:
        raise InvalidMessage(_R.OVERSIZED, f"items key is {len(key)} bytes")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage(_R.UNDECODABLE, "items record key is not UTF-8") from None
    if len(key_text) > limits.max_id_chars:
        raise InvalidMessage(_R.OVERSIZED, f"items key has {len(key_text)} chars, over {limits.max_id_chars}")
    if value is None:
        if not key_text.strip():
            raise InvalidMessage(_R.INVALID_VALUE, "tombstone with an empty key")
        return ItemDeletion(key_text)
    doc = _parse_object(value, limits, "item")
    item_id = _str(doc, "item_id", limits.max_id_chars, required=True)
    assert item_id is not None
    if item_id != key_text:
        raise InvalidMessage(_R.INVALID_VALUE, f"record key {key_text[:64]!r} differs from item_id {item_id[:64]!r}")
    available = doc.get("available", True)
    if available is None:
        available = True
    if type(available) is not bool:
        raise InvalidMessage(_R.WRONG_TYPE, f"field 'available' must be a boolean, not {_jtype(available)}")
    title = _str(doc, "title", limits.max_text_chars, required=available)
    description = _str(doc, "description", limits.max_description_chars, required=False, empty_ok=True)
    category = _str(doc, "category", limits.max_text_chars, required=False, empty_ok=True)
    raw_tags = doc.get("tags")
    tags: tuple[str, ...] = ()
    if raw_tags is not None:
        if type(raw_tags) is not list:
            raise InvalidMessage(_R.WRONG_TYPE, f"field 'tags' must be an array, not {_jtype(raw_tags)}")
        if len(raw_tags) > limits.max_tags:
            raise InvalidMessage(_R.OVERSIZED, f"field 'tags' has {len(raw_tags)} entries, over {limits.max_tags}")
        for t in raw_tags:
            if type(t) is not str:
                raise InvalidMessage(_R.WRONG_TYPE, f"field 'tags' must hold strings, not {_jtype(t)}")
            if len(t) > limits.max_id_chars:
                raise InvalidMessage(_R.OVERSIZED, f"a tag has {len(t)} chars, over {limits.max_id_chars}")
            _check_unicode(t, "a tag")
        tags = tuple(raw_tags)
    return ItemRecord(item_id, title or "", description or None, category or None, tags, available)


def decode_recommendation(value: bytes) -> Recommendation:
    """Decode a ``recommendations`` message (for ``streamrec tail`` and tests; trusts the producer less
    than nothing: any malformation raises :class:`InvalidMessage`)."""
    doc = _parse_object(value, Limits(max_message_bytes=1 << 24), "recommendation")
    try:
        items = tuple((str(i["item_id"]), float(i["score"])) for i in doc["items"])
        return Recommendation(
            user_id=str(doc["user_id"]),
            event_id=str(doc["event_id"]),
            items=items,
            model=str(doc["model"]),
            event_ts=int(doc["event_ts"]),
            emitted_ts=int(doc["emitted_ts"]),
            latency_ms={str(k): float(v) for k, v in (doc.get("latency_ms") or {}).items()},
            strategy=None if doc.get("strategy") is None else str(doc["strategy"]),
            fallback=bool(doc.get("fallback", False)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidMessage(_R.MISSING_FIELD, f"malformed recommendation: {exc!r}") from None
