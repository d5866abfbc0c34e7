"""The evaluation's event logs: the user's JSON Lines files and the built-in MovieLens-100K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.streams.evaluation.data import EvaluationDataError, jsonl_log, movielens_log
from streamrec.streams.schemas import EventType


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_log_sorts_by_time_keeps_ties_in_file_order_and_skips_bad_lines(tmp_path: Path) -> None:
    items = _write(
        tmp_path / "items.jsonl",
        [
            {"item_id": "a", "title": "Alpha"},
            {"item_id": "b", "title": "Beta"},
            {"item_id": "a", "title": "Alpha, second edition"},  # a later line replaces an earlier one
            {"item_id": "c", "available": False},
            "{not json",
            {"title": "no id"},
        ],
    )
    events = _write(
        tmp_path / "events.jsonl",
        [
            {"user_id": "u1", "type": "view", "item_id": "b", "ts": 2000, "event_id": "e2"},
            {"user_id": "u1", "type": "click", "item_id": "a", "ts": 1000, "event_id": "e1"},
            {"user_id": "u2", "type": "search", "query": "alpha", "ts": "1970-01-01T00:00:02Z"},
            {"user_id": "u2", "type": "purchase", "item_id": "a", "ts": 2000},
            {"user_id": "u3", "type": "view", "item_id": "a"},  # no ts: cannot be placed in time
            {"user_id": "u3", "type": "teleport", "item_id": "a", "ts": 5},
            "",
        ],
    )
    log = jsonl_log(events, items)
    assert [(e.user_id, e.ts_ms) for e in log.events] == [("u1", 1000), ("u1", 2000), ("u2", 2000), ("u2", 2000)]
    assert log.events[2].type is EventType.SEARCH and log.events[3].type is EventType.PURCHASE
    assert log.events[3].event_id == "events.jsonl:0:4"  # default id: file, line number: unique per line
    assert [i.title for i in log.items] == ["Alpha, second edition", "Beta", ""]
    assert log.catalogue == ["a", "b"]  # c is not available
    assert log.skipped == {
        "items:invalid_json": 1,
        "items:missing_field": 1,
        "events:missing_field": 1,
        "events:unknown_type": 1,
    }
    assert "4 events of 2 users, 2 items; 4 lines skipped" in log.describe()


def test_jsonl_log_without_usable_items_or_events(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.jsonl", [{"item_id": "a", "title": "A"}])
    no_items = _write(tmp_path / "none.jsonl", ["[]"])
    events = _write(tmp_path / "events.jsonl", [{"user_id": "u", "type": "search", "query": "x", "ts": 1}])
    with pytest.raises(EvaluationDataError, match="no valid item"):
        jsonl_log(events, no_items)
    with pytest.raises(EvaluationDataError, match="no valid event that names an item"):
        jsonl_log(events, items)
    with pytest.raises(EvaluationDataError, match="cannot read"):
        jsonl_log(tmp_path / "missing.jsonl", items)


def test_movielens_log_uses_original_times_and_no_searches() -> None:
    log = movielens_log(users=20, max_events=15, seed=1)
    assert len(log.users) == 20
    assert len(log.catalogue) == 1682
    assert all(e.type is not EventType.SEARCH for e in log.events)
    per_user: dict[str, int] = {}
    for e in log.events:
        per_user[e.user_id] = per_user.get(e.user_id, 0) + 1
    assert max(per_user.values()) == 15
    times = [e.ts_ms for e in log.events]
    assert times == sorted(times) and times[0] > 8e11  # 1997-1998, in ms
    assert len({e.event_id for e in log.events}) == len(log.events)
    assert movielens_log(users=20, max_events=15, seed=1).events == log.events
