"""Dead-letter records: the original key and value bytes, unchanged, with the reason in headers.

A rejected record is produced to the dead-letter topic with the SAME key and value bytes it had, and
these headers (all values UTF-8):

| header                    | value                                                         |
| ------------------------- | ------------------------------------------------------------- |
| `streamrec.dlq.reason`    | a :class:`~streamrec.streams.schemas.DeadLetterReason` value   |
| `streamrec.dlq.detail`    | human-readable detail (at most 1,000 chars)                    |
| `streamrec.dlq.topic`     | source topic                                                   |
| `streamrec.dlq.partition` | source partition (decimal)                                     |
| `streamrec.dlq.offset`    | source offset (decimal)                                        |
| `streamrec.dlq.ts`        | when it was dead-lettered, epoch ms (decimal)                  |
| `streamrec.dlq.source_ts` | the source record's timestamp, epoch ms (only if known)        |
| `streamrec.dlq.worker`    | the worker that rejected it (only if given)                    |
| `streamrec.dlq.truncated` | only on a truncated copy: `value`, `key` or `key,value` (below) |
| `streamrec.dlq.value_bytes` / `.value_sha256` | size and SHA-256 (hex) of the original value, if truncated |
| `streamrec.dlq.key_bytes` / `.key_sha256` | the same for the original key, if truncated       |

The original record's own headers are not copied. A record too large to be produced again (key + value
over ``MAX_RECORD_BYTES``; the broker accepts records a little over 1 MB, our producer's requests stop at
1,000,000 bytes) is dead-lettered **truncated** -- the first ``KEEP_VALUE_BYTES`` of the value (and
``KEEP_KEY_BYTES`` of an oversized key) -- with its size and hash in headers, never dropped. Pure
functions: the caller passes the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamrec.errors import StreamrecError
from streamrec.streams.schemas import DeadLetterReason, InvalidMessage

__all__ = [
    "HEADER_DETAIL",
    "HEADER_OFFSET",
    "HEADER_PARTITION",
    "HEADER_PREFIX",
    "HEADER_REASON",
    "HEADER_SOURCE_TS",
    "HEADER_TOPIC",
    "HEADER_TRUNCATED",
    "HEADER_TS",
    "HEADER_WORKER",
    "KEEP_KEY_BYTES",
    "KEEP_VALUE_BYTES",
    "MAX_DETAIL_CHARS",
    "MAX_RECORD_BYTES",
    "DeadLetterInfo",
    "DeadLetterRecord",
    "dead_letter_headers",
    "dead_letter_record",
    "parse_dead_letter_headers",
]

HEADER_PREFIX = "streamrec.dlq."
HEADER_REASON = HEADER_PREFIX + "reason"
HEADER_DETAIL = HEADER_PREFIX + "detail"
HEADER_TOPIC = HEADER_PREFIX + "topic"
HEADER_PARTITION = HEADER_PREFIX + "partition"
HEADER_OFFSET = HEADER_PREFIX + "offset"
HEADER_TS = HEADER_PREFIX + "ts"
HEADER_SOURCE_TS = HEADER_PREFIX + "source_ts"
HEADER_WORKER = HEADER_PREFIX + "worker"
HEADER_TRUNCATED = HEADER_PREFIX + "truncated"
MAX_DETAIL_CHARS = 1_000
MAX_RECORD_BYTES = 900_000  # key + value; leaves room for headers under the producer's 1,000,000 B
KEEP_VALUE_BYTES = 64 * 1024  # the decoders' own message limit: enough to see what the record was
KEEP_KEY_BYTES = 1024


def dead_letter_headers(
    reason: DeadLetterReason,
    detail: str,
    source_topic: str,
    partition: int,
    offset: int,
    *,
    now_ms: int,
    source_ts_ms: int | None = None,
    worker: str | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record (see the module docstring)."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    headers = [
        (HEADER_REASON, reason.value.encode()),
        (HEADER_DETAIL, detail.encode("utf-8", "replace")),
        (HEADER_TOPIC, source_topic.encode("utf-8", "replace")),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_TS, str(now_ms).encode()),
    ]
    if source_ts_ms is not None and source_ts_ms >= 0:
        headers.append((HEADER_SOURCE_TS, str(source_ts_ms).encode()))
    if worker:
        headers.append((HEADER_WORKER, worker.encode("utf-8", "replace")))
    return headers


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """What to produce to the dead-letter topic: ``producer.send(topic, value, key=key, headers=headers)``."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    error: InvalidMessage,
    source_topic: str,
    partition: int,
    offset: int,
    *,
    now_ms: int,
    source_ts_ms: int | None = None,
    worker: str | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> DeadLetterRecord:
    """The dead-letter record for a rejected source record: its own key and value, the reason in headers
    (truncated, with the original's size and SHA-256 in headers, when key + value exceed ``max_record_bytes``)."""
    headers = dead_letter_headers(
        error.reason,
        error.detail,
        source_topic,
        partition,
        offset,
        now_ms=now_ms,
        source_ts_ms=source_ts_ms,
        worker=worker,
    )
    if len(key or b"") + len(value or b"") <= max_record_bytes:
        return DeadLetterRecord(key, value, headers)
    truncated: list[str] = []
    if key is not None and len(key) > KEEP_KEY_BYTES:
        truncated.append("key")
        headers += _original("key", key)
        key = key[:KEEP_KEY_BYTES]
    if value is not None and len(value) > KEEP_VALUE_BYTES:
        truncated.append("value")
        headers += _original("value", value)
        value = value[:KEEP_VALUE_BYTES]
    headers.append((HEADER_TRUNCATED, ",".join(truncated).encode()))
    return DeadLetterRecord(key, value, headers)


def _original(what: str, data: bytes) -> list[tuple[str, bytes]]:
    return [
        (f"{HEADER_PREFIX}{what}_bytes", str(len(data)).encode()),
        (f"{HEADER_PREFIX}{what}_sha256", hashlib.sha256(data).hexdigest().encode()),
    ]


class DeadLetterHeaderError(StreamrecError):
    """A record's headers are not those of a streamrec dead letter."""


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    reason: DeadLetterReason
    detail: str
    source_topic: str
    partition: int
    offset: int
    ts_ms: int
    source_ts_ms: int | None = None
    worker: str | None = None
    truncated: tuple[str, ...] = ()  # "key" and/or "value": the record holds a prefix of those
    original_bytes: dict[str, int] = field(default_factory=dict)  # by "key"/"value", when truncated
    original_sha256: dict[str, str] = field(default_factory=dict)


def parse_dead_letter_headers(headers: Iterable[tuple[str, bytes]]) -> DeadLetterInfo:
    """Read the headers written by :func:`dead_letter_headers` back (tests, tools)."""
    h = {k: v.decode("utf-8", "replace") for k, v in headers if k.startswith(HEADER_PREFIX)}
    try:
        return DeadLetterInfo(
            reason=DeadLetterReason(h[HEADER_REASON]),
            detail=h[HEADER_DETAIL],
            source_topic=h[HEADER_TOPIC],
            partition=int(h[HEADER_PARTITION]),
            offset=int(h[HEADER_OFFSET]),
            ts_ms=int(h[HEADER_TS]),
            source_ts_ms=int(h[HEADER_SOURCE_TS]) if HEADER_SOURCE_TS in h else None,
            worker=h.get(HEADER_WORKER),
            truncated=tuple(t for t in h.get(HEADER_TRUNCATED, "").split(",") if t),
            original_bytes={
                w: int(h[f"{HEADER_PREFIX}{w}_bytes"]) for w in ("key", "value") if f"{HEADER_PREFIX}{w}_bytes" in h
            },
            original_sha256={
                w: h[f"{HEADER_PREFIX}{w}_sha256"] for w in ("key", "value") if f"{HEADER_PREFIX}{w}_sha256" in h
            },
        )
    except (KeyError, ValueError) as exc:
        raise DeadLetterHeaderError(f"not a streamrec dead-letter record: {exc!r} (headers: {sorted(h)})") from None
