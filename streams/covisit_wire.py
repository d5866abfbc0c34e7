"""The co-visitation messages on Kafka: row deltas (``<app_id>-covisit-deltas``) and published rows
(``<app_id>-covisit-rows``), in a compact binary form.

Why not JSON: every worker decodes every published row, every owner decodes every batch's deltas, and
both happen on the worker's event loop, beside the hot path (a profile of a worker at 1,500 events/s:
co-visitation JSON encoding, decoding and merging took ~20 % of the loop's time). Here the ids of a
message are written once each (a batch's deltas name the same items many times), numbers are packed
IEEE doubles, and reading is a few ``numpy.frombuffer`` calls -- no pickle, no code from the wire.

Format 2, little-endian (the first byte tells the format; JSON, format 1, starts with ``{``, so messages
written by an older version -- a compacted rows topic keeps them -- are still read)::

    deltas: u8 2 | u8 kind=1 | u32 S | u32 R | u32 P | u32 len[S] | utf8 ids | u32 item[R] | f64 ts[R]
            | f64 n[R] | u32 pairs_of[R] | u32 pair_id[P] | f64 pair_w[P]
    row:    u8 2 | u8 kind=2 | f64 n | f64 ref | i64 version | u32 K | u32 len[K + 1] | utf8 ids (item first)
            | f64 w[K]

``item``/``pair_id`` index the id table; row r's pairs are the next ``pairs_of[r]`` pairs. A reader checks
that the sizes add up to the message's length exactly, every index is in range, every id is UTF-8 and every
number is finite; anything else is refused (``ValueError`` for deltas, :class:`CovisitRowError` for rows),
which the callers count and skip, as with a corrupt JSON message.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.streams.covisit import CovisitDelta, CovisitRow, CovisitRowError

__all__ = ["FORMAT", "decode_deltas", "decode_row", "encode_deltas", "encode_row"]

FORMAT = 2
_DELTAS, _ROW = 1, 2
_DELTAS_HEAD = struct.Struct("<BBIII")
_ROW_HEAD = struct.Struct("<BBddqI")
_U32 = np.dtype("<u4")
_F64 = np.dtype("<f8")


# ---------------------------------------------------------------------------------------------- deltas
def encode_deltas(deltas: Sequence[CovisitDelta]) -> bytes:
    """One deltas message (format 2) for ``deltas``."""
    table: dict[str, int] = {}
    ids = table.setdefault
    items = [ids(d.item, len(table)) for d in deltas]
    pair_ids = [ids(j, len(table)) for d in deltas for j in d.pairs]
    pair_w = [w for d in deltas for w in d.pairs.values()]
    return b"".join(
        (
            _DELTAS_HEAD.pack(FORMAT, _DELTAS, len(table), len(deltas), len(pair_ids)),
            *_pack_ids(list(table)),
            np.array(items, _U32).tobytes(),
            np.array([d.ts_s for d in deltas], _F64).tobytes(),
            np.array([d.n for d in deltas], _F64).tobytes(),
            np.array([len(d.pairs) for d in deltas], _U32).tobytes(),
            np.array(pair_ids, _U32).tobytes(),
            np.array(pair_w, _F64).tobytes(),
        )
    )


def decode_deltas(value: bytes | None) -> list[CovisitDelta]:
    """The deltas of a message of either format; ``ValueError`` on anything that is not one."""
    if not value:
        raise ValueError("empty covisit deltas message")
    if value[:1] == b"{":
        return _decode_deltas_json(value)
    r = _Reader(value)
    fmt, kind, n_ids, n_rows, n_pairs = r.unpack(_DELTAS_HEAD)
    if fmt != FORMAT or kind != _DELTAS:
        raise ValueError(f"covisit deltas format {fmt}/{kind} is not {FORMAT}/{_DELTAS}")
    table = r.ids(n_ids)
    items = r.array(_U32, n_rows)
    ts = r.array(_F64, n_rows)
    n = r.array(_F64, n_rows)
    pairs_of = r.array(_U32, n_rows)
    pair_ids = r.array(_U32, n_pairs)
    pair_w = r.array(_F64, n_pairs)
    r.end()
    if int(pairs_of.sum(dtype=np.uint64)) != n_pairs:
        raise ValueError("covisit deltas: the rows' pair counts do not add up to the pairs")
    _check_indices(items, n_ids)
    _check_indices(pair_ids, n_ids)
    _check_finite(ts, n, pair_w)
    names = [table[i] for i in pair_ids.tolist()]
    weights = pair_w.tolist()
    out = []
    at = 0
    for item, t, c, count in zip(items.tolist(), ts.tolist(), n.tolist(), pairs_of.tolist(), strict=True):
        out.append(CovisitDelta(table[item], t, c, dict(zip(names[at : at + count], weights[at : at + count]))))
        at += count
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
    JSON's sake): a replica holds the owner's numbers, as the offline graph of ``streamrec evaluate`` does."""
    return b"".join(
        (
            _ROW_HEAD.pack(FORMAT, _ROW, row.n, row.ref_s, row.version, len(row.ids)),
            *_pack_ids([row.item, *row.ids]),
            np.array(row.weights, _F64).tobytes(),
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
        r.end()
        if not (math.isfinite(n) and math.isfinite(ref)):
            raise ValueError("a non-finite weight or time")
        _check_finite(weights)
        return CovisitRow(item, n, ref, tuple(ids), tuple(weights.tolist()), version)
    except ValueError as exc:
        raise CovisitRowError(f"corrupt covisit row ({exc})") from None


def _pack_ids(names: list[str]) -> tuple[bytes, bytes]:
    """The byte lengths (u32 each) and the UTF-8 of ``names``, concatenated."""
    text = "".join(names)
    if text.isascii():  # the common case: one encode, lengths in characters = lengths in bytes
        return np.fromiter(map(len, names), _U32, len(names)).tobytes(), text.encode("ascii")
    encoded = [s.encode("utf-8") for s in names]
    return np.fromiter(map(len, encoded), _U32, len(encoded)).tobytes(), b"".join(encoded)


# ---------------------------------------------------------------------------------------------- reading
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

    def array(self, dtype: np.dtype[np.generic], count: int) -> npt.NDArray[np.generic]:
        start = self._take(count * dtype.itemsize)
        return np.frombuffer(self.data, dtype, count, start)

    def ids(self, count: int) -> list[str]:
        if count == 0:
            return []
        ends = np.cumsum(self.array(_U32, count), dtype=np.uint64).tolist()
        size = ends[-1]
        start = self._take(size)
        raw = self.data[start : start + size]
        if raw.isascii():  # one decode, then slices (byte offsets = character offsets)
            text = raw.decode("ascii")
            return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        # UnicodeDecodeError is a ValueError
        return [raw[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def end(self) -> None:
        if self.at != len(self.data):
            raise ValueError(f"{len(self.data) - self.at} bytes after the end of the message")


def _check_indices(idx: npt.NDArray[np.generic], size: int) -> None:
    if idx.size and int(idx.max()) >= size:
        raise ValueError("an id index out of range")


def _check_finite(*arrays: npt.NDArray[np.generic]) -> None:
    for a in arrays:
        if a.size and not np.isfinite(a).all():
            raise ValueError("a non-finite number")
