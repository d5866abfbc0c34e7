"""The session-log converter: what ``streamrec evaluate --events/--items`` reads, in time order."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sessions_to_jsonl import main, read_clicks
from streamrec.streams.evaluation.data import jsonl_log
from streamrec.streams.schemas import EventType


def test_two_splits_become_one_time_ordered_log_the_evaluation_reads(tmp_path: Path) -> None:
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("SessionId\tItemId\tTime\n3\t20\t1396437466.94\n3\t21\t1396438212.318\n7\t20\t1396413533.1\n")
    test.write_text("Time\tSessionId\tItemId\n1396438000.5\t9\t22\n")  # other column order: read by name
    main([str(train), str(test), "--out", str(tmp_path / "out")])
    log = jsonl_log(tmp_path / "out" / "events.jsonl", tmp_path / "out" / "items.jsonl")
    assert not log.skipped
    assert [(e.user_id, e.item_id, e.ts_ms) for e in log.events] == [
        ("7", "20", 1396413533100),
        ("3", "20", 1396437466940),
        ("9", "22", 1396438000500),
        ("3", "21", 1396438212318),
    ]
    assert {e.type for e in log.events} == {EventType.CLICK}
    assert len({e.event_id for e in log.events}) == 4
    assert sorted(log.catalogue) == ["20", "21", "22"]


def test_a_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("session\titem\ttime\n1\t2\t3\n")
    with pytest.raises(ValueError, match="no column SessionId"):
        read_clicks([bad])
    garbled = tmp_path / "garbled.txt"
    garbled.write_text("SessionId\tItemId\tTime\n1\t2\tyesterday\n")
    with pytest.raises(ValueError, match=r"garbled\.txt:2"):
        read_clicks([garbled])
