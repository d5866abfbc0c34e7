"""The co-visitation messages on Kafka: row deltas (``<app_id>-covisit-deltas``) and published rows
(``<app_id>-covisit-rows``), in a compact binary form.

Why not JSON: every worker decodes every published row, every owner decodes every batch's deltas, and
both happen on the worker's event loop, beside the hot path (a profile of a worker at 1,500 events/s:
co-visitation JSON encoding, decoding and merging took ~20 % of the loop's time). Here the ids of a
message are written once each (a batch's deltas name the same items many times), numbers are packed
IEEE doubles, and reading is a few ``struct.unpack_from`` calls -- no pickle, no code from the wire.

Format 2, little-endian (the first byte tells the format; JSON, format 1, starts with ``{``, so messages
written by an older version -- a compacted rows topic keeps them -- are still read)::

    deltas: u8 2 | u8 kind=1 | u32 S | u32 R | u32 P | u32 T | u32 len[S] | utf8 ids | u32 item[R] | f64 ts[R]
            | f64 n[R] | u32 pairs_of[R] | u32 pair_id[P] | f64 pair_w[P]
            | u32 nexts_of[R] | u32 next_id[T] | f64 next_w[T]
    row:    u8 2 | u8 kind=2 | f64 n | f64 ref | i64 version | u32 K | u32 len[K + 1] | utf8 ids (item first)
            | f64 w[K] | u32 T (0 or K) | f64 t[T]

``item``/``pair_id``/``next_id`` index the id table; row r's pairs are the next ``pairs_of[r]`` pairs, its
direct successors (``CovisitDelta.nexts``) the next ``nexts_of[r]``; a row's ``t`` are the direct-successor
counts of its neighbours (``CovisitRow.nexts``, aligned with the ids; T = 0: none). A reader checks
that the sizes add up to the message's length exactly, every index is in range, every id is UTF-8 and every
number is finite; anything else is refused (``ValueError`` for deltas, :class:`CovisitRowError` for rows),
which the callers count and skip, as with a corrupt JSON message.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.streams.covisit import CovisitDelta, CovisitRow, CovisitRowError

__all__ = ["FORMAT", "decode_deltas", "decode_row", "decode_row_arrays", "encode_deltas", "encode_row", "peek_row"]

FORMAT = 2
_DELTAS, _ROW = 1, 2
_DELTAS_HEAD = struct.Struct("<BBIIII")
_ROW_HEAD = struct.Struct("<BBddqI")
_U32, _F64 = "I", "d"  # struct codes, little-endian (``_pack``/``_Reader.array``)


# ---------------------------------------------------------------------------------------------- deltas
def encode_deltas(deltas: Sequence[CovisitDelta]) -> bytes:
    """One deltas message (format 2) for ``deltas``."""
    table: dict[str, int] = {}
    ids = table.setdefault
    items = [ids(d.item, len(table)) for d in deltas]
    pair_ids = [ids(j, len(table)) for d in deltas for j in d.pairs]
    pair_w = [w for d in deltas for w in d.pairs.values()]
    next_ids = [ids(j, len(table)) for d in deltas for j in d.nexts]
    next_w = [w for d in deltas for w in d.nexts.values()]
    return b"".join(
        (
            _DELTAS_HEAD.pack(FORMAT, _DELTAS, len(table), len(deltas), len(pair_ids), len(next_ids)),
            *_pack_ids(list(table)),
            _pack(_U32, items),
            _pack(_F64, [d.ts_s for d in deltas]),
            _pack(_F64, [d.n for d in deltas]),
            _pack(_U32, [len(d.pairs) for d in deltas]),
            _pack(_U32, pair_ids),
            _pack(_F64, pair_w),
            _pack(_U32, [len(d.nexts) for d in deltas]),
            _pack(_U32, next_ids),
            _pack(_F64, next_w),
        )
    )


def decode_deltas(value: bytes | None) -> list[CovisitDelta]:
    """The deltas of a message of either format; ``ValueError`` on anything that is not one."""
    if not value:
        raise ValueError("empty covisit deltas message")
    if value[:1] == b"{":
        return _decode_deltas_json(value)
    r = _Reader(value)
    fmt, kind, n_ids, n_rows, n_pairs, n_nexts = r.unpack(_DELTAS_HEAD)
    if fmt != FORMAT or kind != _DELTAS:
        raise ValueError(f"covisit deltas format {fmt}/{kind} is not {FORMAT}/{_DELTAS}")
    table = r.ids(n_ids)
    items = r.array(_U32, n_rows)
    ts = r.array(_F64, n_rows)
    n = r.array(_F64, n_rows)
    pairs_of = r.array(_U32, n_rows)
    pair_ids = r.array(_U32, n_pairs)
    weights = r.array(_F64, n_pairs)
    nexts_of = r.array(_U32, n_rows)
    next_ids = r.array(_U32, n_nexts)
    next_w = r.array(_F64, n_nexts)
    r.end()
    if sum(pairs_of) != n_pairs or sum(nexts_of) != n_nexts:
        raise ValueError("covisit deltas: the rows' pair counts do not add up to the pairs")
    if max(items, default=-1) >= n_ids or max(pair_ids, default=-1) >= n_ids or max(next_ids, default=-1) >= n_ids:
        raise ValueError("an id index out of range")
    _check_finite(ts, n, weights, next_w)
    names = [table[i] for i in pair_ids]
    next_names = [table[i] for i in next_ids]
    out = []
    at = at_next = 0
    for item, t, c, count, count_next in zip(items, ts, n, pairs_of, nexts_of, strict=True):
        pairs = dict(zip(names[at : at + count], weights[at : at + count], strict=True))
        nexts = dict(
            zip(next_names[at_next : at_next + count_next], next_w[at_next : at_next + count_next], strict=True)
        )
        out.append(CovisitDelta(table[item], t, c, pairs, nexts))
        at += count
        at_next += count_next
    return out


def _decode_deltas_json(value: bytes) -> list[CovisitDelta]:
    """Format 1 (JSON), as written before format 2."""
    try:
        doc = json.loads(value.decode("utf-8"))
        if doc.get("v") != 1:
            raise ValueError(f"deltas format {doc.get('v')!r} is not 1")
        return [CovisitDelta.from_doc(d) for d in doc["rows"]]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt deltas message: {exc!r}") from None


# ---------------------------------------------------------------------------------------------- rows
def encode_row(row: CovisitRow) -> bytes:
    """One published row (format 2). Weights travel exactly (format 1 rounded them to 6 decimals for
    JSON's sake); a replica keeps them as float32 (:class:`~streamrec.streams.covisit.CovisitGraph`)."""
    return b"".join(
        (
            _ROW_HEAD.pack(FORMAT, _ROW, row.n, row.ref_s, row.version, len(row.ids)),
            *_pack_ids([row.item, *row.ids]),
            _pack(_F64, row.weights),
            _pack(_U32, [len(row.nexts)]),
            _pack(_F64, row.nexts),
        )
    )


def decode_row(value: bytes | None) -> CovisitRow:
    """A published row of either format; :class:`CovisitRowError` on anything that is not one."""
    if not value:
        raise CovisitRowError("empty covisit row")
    if value[:1] == b"{":
        return CovisitRow.from_json_bytes(value)
    try:
        r = _Reader(value)
        fmt, kind, n, ref, version, count = r.unpack(_ROW_HEAD)
        if fmt != FORMAT or kind != _ROW:
            raise ValueError(f"covisit row format {fmt}/{kind} is not {FORMAT}/{_ROW}")
        item, *ids = r.ids(count + 1)
        weights = r.array(_F64, count)
        (n_nexts,) = r.array(_U32, 1)
        if n_nexts not in (0, count):
            raise ValueError(f"{n_nexts} direct-successor counts for {count} neighbours")
        nexts = r.array(_F64, n_nexts)
        r.end()
        _check_finite((n, ref), weights, nexts)
        return CovisitRow(item, n, ref, tuple(ids), weights, version, nexts)
    except ValueError as exc:  # struct.error is a ValueError too
        raise CovisitRowError(f"corrupt covisit row ({exc})") from None


def peek_row(value: bytes) -> tuple[str, float, float, int]:
    """``(item, n, ref, version)`` of a format-2 row, its structure checked (every size inside the message and
    adding up to its length, the item id UTF-8, ``n`` and ``ref`` finite) without decoding the neighbours: a
    replica stores the message and decodes the rest (:func:`decode_row`, every check) when the row is first
    read. ~1 µs instead of ~30-70 (a worker replicates every row every owner publishes, most of which a large
    catalogue never serves before the next version replaces them). :class:`CovisitRowError` if it is not one
    (a JSON row of format 1 included: read those with :func:`decode_row`)."""
    try:
        r = _Reader(value)
        fmt, kind, n, ref, version, count = r.unpack(_ROW_HEAD)
        if fmt != FORMAT or kind != _ROW:
            raise ValueError(f"covisit row format {fmt}/{kind} is not {FORMAT}/{_ROW}")
        lengths = r.array(_U32, count + 1)
        start = r._take(sum(lengths))
        item = value[start : start + lengths[0]].decode("utf-8")
        r._take(8 * count)
        (n_nexts,) = r.array(_U32, 1)
        if n_nexts not in (0, count):
            raise ValueError(f"{n_nexts} direct-successor counts for {count} neighbours")
        r._take(8 * n_nexts)
        r.end()
        _check_finite((n, ref))
        return item, n, ref, version
    except ValueError as exc:  # struct.error and UnicodeDecodeError are ValueErrors too
        raise CovisitRowError(f"corrupt covisit row ({exc})") from None


def decode_row_arrays(value: bytes) -> tuple[list[str], npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """The neighbours of a format-2 row as a replica stores them: ``(ids, weights, nexts)``, the counts as
    float32 arrays read straight from the message (``nexts`` None: none), after every check of
    :func:`decode_row` (structure, UTF-8, finite numbers). What a replica runs when it first serves a row
    stored undecoded; :class:`CovisitRowError` if it is not a valid row."""
    try:
        r = _Reader(value)
        fmt, kind, _n, _ref, _version, count = r.unpack(_ROW_HEAD)
        if fmt != FORMAT or kind != _ROW:
            raise ValueError(f"covisit row format {fmt}/{kind} is not {FORMAT}/{_ROW}")
        _item, *ids = r.ids(count + 1)
        w = np.frombuffer(value, "<f8", count, r._take(8 * count))
        (n_nexts,) = r.array(_U32, 1)
        if n_nexts not in (0, count):
            raise ValueError(f"{n_nexts} direct-successor counts for {count} neighbours")
        t = np.frombuffer(value, "<f8", n_nexts, r._take(8 * n_nexts))
        r.end()
        if not (np.isfinite(w).all() and np.isfinite(t).all()):
            raise ValueError("a non-finite number")
        return ids, w.astype(np.float32), (t.astype(np.float32) if n_nexts and t.any() else None)
    except ValueError as exc:  # struct.error and UnicodeDecodeError are ValueErrors too
        raise CovisitRowError(f"corrupt covisit row ({exc})") from None


# ---------------------------------------------------------------------------------------------- packing
def _pack(code: str, values: Sequence[Any]) -> bytes:
    return struct.pack(f"<{len(values)}{code}", *values)


def _pack_ids(names: list[str]) -> tuple[bytes, bytes]:
    """The byte lengths (u32 each) and the UTF-8 of ``names``, concatenated."""
    text = "".join(names)
    if text.isascii():  # the common case: one encode, lengths in characters = lengths in bytes
        return _pack(_U32, [len(s) for s in names]), text.encode("ascii")
    encoded = [s.encode("utf-8") for s in names]
    return _pack(_U32, [len(b) for b in encoded]), b"".join(encoded)


class _Reader:
    """Reads a message front to back; every read checks it stays inside the message (``ValueError``)."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def _take(self, size: int) -> int:
        start = self.at
        if size < 0 or start + size > len(self.data):
            raise ValueError(f"truncated: {size} bytes wanted at {start} of {len(self.data)}")
        self.at = start + size
        return start

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        return s.unpack_from(self.data, self._take(s.size))

    def array(self, code: str, count: int) -> tuple[Any, ...]:
        """``count`` numbers (``_U32`` ints or ``_F64`` floats), checked to lie inside the message first."""
        start = self._take(count * (4 if code == _U32 else 8))
        return struct.unpack_from(f"<{count}{code}", self.data, start)

    def ids(self, count: int) -> list[str]:
        if count == 0:
            return []
        ends = list(accumulate(self.array(_U32, count)))
        size = ends[-1]
        start = self._take(size)
        raw = self.data[start : start + size]
        starts = [0, *ends[:-1]]
        if raw.isascii():  # one decode, then slices (byte offsets = character offsets)
            text = raw.decode("ascii")
            return [text[a:b] for a, b in zip(starts, ends, strict=True)]
        # UnicodeDecodeError is a ValueError
        return [raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]

    def end(self) -> None:
        if self.at != len(self.data):
            raise ValueError(f"{len(self.data) - self.at} bytes after the end of the message")


def _check_finite(*values: Sequence[float]) -> None:
    for v in values:
        if not all(map(math.isfinite, v)):
            raise ValueError("a non-finite number")
