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

The original record's own headers are not copied. Pure functions: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    "HEADER_TS",
    "HEADER_WORKER",
    "MAX_DETAIL_CHARS",
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
MAX_DETAIL_CHARS = 1_000


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
) -> DeadLetterRecord:
    """The dead-letter record for a rejected source record: its own key and value, the reason in headers."""
    headers = dead_letter_headers(
        error.reason, error.detail, source_topic, partition, offset,
        now_ms=now_ms, source_ts_ms=source_ts_ms, worker=worker,
    )
    return DeadLetterRecord(key, value, headers)


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
        )
    except (KeyError, ValueError) as exc:
        raise DeadLetterHeaderError(f"not a streamrec dead-letter record: {exc!r} (headers: {sorted(h)})") from None
