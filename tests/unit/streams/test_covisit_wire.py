"""The co-visitation wire format (format 2, binary): round trips, the old JSON format, corrupt input."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from streamrec.streams.covisit import CovisitConfig, CovisitDelta, CovisitRow, CovisitRowError, DeltaBatch
from streamrec.streams.covisit_wire import (
    decode_deltas,
    decode_row,
    decode_row_arrays,
    encode_deltas,
    encode_row,
    peek_row,
)


def _deltas() -> list[CovisitDelta]:
    batch = DeltaBatch(CovisitConfig())
    batch.observe("a", 1.0, 1_000.0, ["b", "c", "d"])
    batch.observe("b", 2.5, 1_010.0, ["a", "c"])
    batch.observe("ü-ñ 🛒", 0.5, 1_020.0, ["a", "b"])  # non-ASCII ids
    out = batch.deltas()
    out.append(CovisitDelta("lonely", 5.0, 1.0, {}))  # a row with no pairs
    return out


def test_deltas_round_trip_exactly() -> None:
    deltas = _deltas()
    back = decode_deltas(encode_deltas(deltas))
    assert back == deltas  # same items, times, weights and pairs, bit for bit
    assert [list(d.pairs) for d in back] == [list(d.pairs) for d in deltas]  # pair order too


def test_an_empty_deltas_message_round_trips() -> None:
    assert decode_deltas(encode_deltas([])) == []


def test_deltas_in_the_json_format_are_still_read() -> None:
    deltas = _deltas()
    v1 = json.dumps({"v": 1, "rows": [d.to_doc() for d in deltas]}).encode()
    # format 1 had no direct-successor counts
    assert decode_deltas(v1) == [CovisitDelta(d.item, d.ts_s, d.n, d.pairs) for d in deltas]


def test_deltas_write_each_id_once_and_are_smaller_than_json() -> None:
    deltas = _deltas()
    v1 = json.dumps({"v": 1, "rows": [d.to_doc() for d in deltas]}, separators=(",", ":")).encode()
    v2 = encode_deltas(deltas)
    assert v2.count("ü-ñ 🛒".encode()) == 1
    assert len(v2) < len(v1)


def _row() -> CovisitRow:
    return CovisitRow("item-1", 3.25, 1_700_000_000.5, ("x", "y", "ẑ"), (2.0, 1.1234567891, 1e-9), 42, (1.0, 0.0, 0.5))


def test_deltas_carry_the_direct_successors() -> None:
    deltas = _deltas()
    assert any(d.nexts for d in deltas)  # observe() records the transition of each event
    assert [d.nexts for d in decode_deltas(encode_deltas(deltas))] == [d.nexts for d in deltas]


def test_a_row_without_transitions_round_trips() -> None:
    row = CovisitRow("item-1", 3.25, 0.0, ("x", "y"), (2.0, 1.0), 7)
    assert decode_row(encode_row(row)) == row


def test_a_row_with_a_wrong_number_of_transitions_is_refused() -> None:
    good = encode_row(CovisitRow("a", 1.0, 0.0, ("x", "y"), (2.0, 1.0), 1, (1.0, 0.0)))
    k = len(good) - 2 * 8 - 4  # the u32 count before the two doubles
    bad = good[:k] + struct.pack("<I", 1) + good[k + 4 : k + 4 + 8]
    with pytest.raises(CovisitRowError):
        decode_row(bad)


def test_a_row_round_trips_exactly() -> None:
    row = _row()
    assert decode_row(encode_row(row)) == row  # bit for bit (JSON, format 1, rounded weights to 6 decimals)


def test_a_row_with_no_neighbours_round_trips() -> None:
    row = CovisitRow("solo", 1.0, 0.0, (), (), 1)
    assert decode_row(encode_row(row)) == row


def test_rows_in_the_json_format_are_still_read() -> None:
    row = _row()
    # format 1 had no direct-successor counts
    assert decode_row(row.to_json_bytes()) == CovisitRow(row.item, row.n, row.ref_s, row.ids, (2.0, 1.123457, 0.0), 42)


@pytest.mark.parametrize("kind", ["deltas", "row"])
def test_every_truncation_and_any_trailing_byte_is_refused(kind: str) -> None:
    data = encode_deltas(_deltas()) if kind == "deltas" else encode_row(_row())
    error: type[Exception] = ValueError if kind == "deltas" else CovisitRowError
    decode = decode_deltas if kind == "deltas" else decode_row
    for cut in range(len(data)):
        with pytest.raises(error):
            decode(data[:cut])
    with pytest.raises(error):
        decode(data + b"\x00")


def _deltas_message(
    ids: list[bytes],
    items: list[int],
    pairs_of: list[int],
    pair_ids: list[int],
    weights: list[float],
    nexts_of: list[int] | None = None,
    next_ids: tuple[int, ...] = (),
    next_w: tuple[float, ...] = (),
) -> bytes:
    rows = len(items)
    nexts_of = nexts_of if nexts_of is not None else [0] * rows
    return b"".join(
        (
            struct.pack("<BBIIII", 2, 1, len(ids), rows, len(pair_ids), len(next_ids)),
            struct.pack(f"<{len(ids)}I", *map(len, ids)),
            *ids,
            struct.pack(f"<{rows}I", *items),
            struct.pack(f"<{rows}d", *[1.0] * rows),
            struct.pack(f"<{rows}d", *[1.0] * rows),
            struct.pack(f"<{rows}I", *pairs_of),
            struct.pack(f"<{len(pair_ids)}I", *pair_ids),
            struct.pack(f"<{len(weights)}d", *weights),
            struct.pack(f"<{rows}I", *nexts_of),
            struct.pack(f"<{len(next_ids)}I", *next_ids),
            struct.pack(f"<{len(next_w)}d", *next_w),
        )
    )


def test_the_hand_built_message_is_valid() -> None:  # the helper below builds real messages
    assert decode_deltas(_deltas_message([b"a", b"b"], [0], [1], [1], [0.5])) == [
        CovisitDelta("a", 1.0, 1.0, {"b": 0.5})
    ]
    assert decode_deltas(_deltas_message([b"a", b"b"], [0], [1], [1], [0.5], [1], (1,), (0.25,))) == [
        CovisitDelta("a", 1.0, 1.0, {"b": 0.5}, {"b": 0.25})
    ]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (_deltas_message([b"a", b"b"], [2], [1], [1], [0.5]), "index out of range"),
        (_deltas_message([b"a", b"b"], [0], [1], [5], [0.5]), "index out of range"),
        (_deltas_message([b"a", b"b"], [0], [2], [1], [0.5]), "pair counts"),
        (_deltas_message([b"a", b"b"], [0], [1], [1], [math.nan]), "non-finite"),
        (_deltas_message([b"a", b"b"], [0], [1], [1], [math.inf]), "non-finite"),
        (_deltas_message([b"a", b"b"], [0], [1], [1], [0.5], [2], (1,), (0.5,)), "next counts"),
        (_deltas_message([b"a", b"b"], [0], [1], [1], [0.5], [1], (9,), (0.5,)), "next index out of range"),
        (_deltas_message([b"a", b"b"], [0], [1], [1], [0.5], [1], (1,), (math.nan,)), "non-finite next"),
        (_deltas_message([b"\xff\xfe", b"b"], [0], [1], [1], [0.5]), "utf-8"),
        (b"\x03" + _deltas_message([b"a"], [0], [0], [], [])[1:], "format"),
        (b"", "empty"),
        (b"\x00\x01\x02", "truncated"),
        (b'{"v": 1, "rows": [{"item": "a"}]}', "json without fields"),
        (b'{"v": 7, "rows": []}', "json of another version"),
        (b"{not json", "broken json"),
    ],
)
def test_corrupt_deltas_are_refused(message: bytes, why: str) -> None:
    with pytest.raises(ValueError):
        decode_deltas(message)


def test_a_huge_claimed_size_is_refused_without_allocating_it() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_deltas(struct.pack("<BBIIII", 2, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))


@pytest.mark.parametrize(
    "message",
    [
        struct.pack("<BBddqI", 2, 2, math.nan, 0.0, 1, 0) + struct.pack("<I", 1) + b"a",
        struct.pack("<BBddqI", 2, 2, 1.0, 0.0, 1, 1) + struct.pack("<II", 1, 1) + b"ab" + struct.pack("<d", math.inf),
        struct.pack("<BBddqI", 2, 1, 1.0, 0.0, 1, 0) + struct.pack("<I", 1) + b"a",  # a deltas kind byte
        struct.pack("<BBddqI", 2, 2, 1.0, 0.0, 1, 0) + struct.pack("<I", 2) + b"\xc3(",  # invalid UTF-8
        b"",
        b'{"v": 1, "item": "a"}',
    ],
)
def test_corrupt_rows_are_refused(message: bytes) -> None:
    with pytest.raises(CovisitRowError):
        decode_row(message)


def test_peek_reads_a_rows_header_and_checks_its_structure() -> None:
    row = _row()
    data = encode_row(row)
    assert peek_row(data) == (row.item, row.n, row.ref_s, row.version)
    for cut in range(len(data)):  # the structure is checked: sizes must add up to the message, exactly
        with pytest.raises(CovisitRowError):
            peek_row(data[:cut])
    with pytest.raises(CovisitRowError):
        peek_row(data + b"\x00")


def _row_message(n: float, ids: list[bytes], weights: list[float], kind: int = 2) -> bytes:
    return b"".join(
        (
            struct.pack("<BBddqI", 2, kind, n, 0.0, 1, len(ids) - 1),
            struct.pack(f"<{len(ids)}I", *map(len, ids)),
            *ids,
            struct.pack(f"<{len(weights)}d", *weights),
            struct.pack("<I", 0),
        )
    )


def test_peek_refuses_what_is_not_a_row_and_leaves_the_neighbours_to_decode() -> None:
    assert decode_row(_row_message(1.0, [b"a", b"b"], [0.5])).ids == ("b",)  # the helper builds real rows
    for bad in (
        _row_message(math.nan, [b"a", b"b"], [0.5]),  # non-finite weight of the row itself
        _row_message(1.0, [b"\xc3(", b"b"], [0.5]),  # the item id is not UTF-8
        _row_message(1.0, [b"a", b"b"], [0.5], kind=1),  # a deltas kind byte
        b'{"v": 1, "item": "a"}',  # JSON rows are decoded, not peeked
        b"",
    ):
        with pytest.raises(CovisitRowError):
            peek_row(bad)
    # what only the full decode checks: a neighbour's id and weight
    for later in (_row_message(1.0, [b"a", b"\xc3("], [0.5]), _row_message(1.0, [b"a", b"b"], [math.inf])):
        assert peek_row(later)[0] == "a"
        with pytest.raises(CovisitRowError):
            decode_row(later)


def test_the_replicas_decode_checks_what_decode_row_checks() -> None:
    row = _row()
    data = encode_row(row)
    ids, weights, nexts = decode_row_arrays(data)
    assert tuple(ids) == row.ids
    assert weights.tolist() == [float(np.float32(w)) for w in row.weights]  # stored as float32
    assert nexts is not None and nexts.tolist() == list(row.nexts)
    no_nexts = CovisitRow("i", 1.0, 0.0, ("x",), (1.0,), 1, ())
    assert decode_row_arrays(encode_row(no_nexts))[2] is None
    for bad in (
        *(data[:cut] for cut in range(len(data))),
        data + b"\x00",
        _row_message(1.0, [b"a", b"\xc3("], [0.5]),
        _row_message(1.0, [b"a", b"b"], [math.inf]),
        _row_message(1.0, [b"a", b"b"], [math.nan]),
        _row_message(1.0, [b"a", b"b"], [0.5], kind=1),
    ):
        with pytest.raises(CovisitRowError):
            decode_row_arrays(bad)
