"""The Kafka path's join and agreement measures, on hand-made answers (the run itself: tests/integration)."""

from __future__ import annotations

import pytest

from streamrec.streams.evaluation.data import EventLog
from streamrec.streams.evaluation.live import LiveRun, agreement, live_result
from streamrec.streams.evaluation.offline import SystemResult
from streamrec.streams.evaluation.scoring import coverage, eval_points, score_lists
from streamrec.streams.schemas import Event, EventType, ItemRecord


def _log() -> EventLog:
    seq = [("u1", "a"), ("u2", "b"), ("u1", "c"), ("u2", "a"), ("u1", "d"), ("u2", "c")]
    events = [Event(u, EventType.VIEW, i, None, t, f"e{t}") for t, (u, i) in enumerate(seq)]
    return EventLog("hand", events, [ItemRecord(i, i.upper()) for i in "abcdef"])


def test_messages_are_joined_to_their_events_by_event_id_and_a_missing_answer_is_a_miss() -> None:
    log = _log()
    points = eval_points(log.events)  # after e0 (u1) -> c, after e1 (u2) -> a, after e2 -> d, after e3 -> c
    assert [(p.position, p.target) for p in points] == [(0, "c"), (1, "a"), (2, "d"), (3, "c")]
    run = LiveRun({"e0": ["c", "b"], "e1": ["c", "a"], "e3": ["f", "e"]}, 6, 3, 0, 0, 0, {}, 1.0, {}, {}, "")
    live = live_result(log, points, run, k=2, name="kafka", params={})
    assert live.lists == [["c", "b"], ["c", "a"], [], ["f", "e"]]
    assert live.scores.hr.tolist() == [1, 1, 0, 0]
    assert live.scores.mrr.tolist() == [1, 0.5, 0, 0]


def test_agreement_between_two_runs_point_by_point() -> None:
    log = _log()
    points = eval_points(log.events)
    a_lists = [["c", "b"], ["c", "a"], [], ["f", "e"]]
    b_lists = [["c", "b"], ["a", "c"], ["d", "e"], ["e", "b"]]

    def result(name: str, lists: list[list[str]]) -> SystemResult:
        return SystemResult(name, "strategy", {}, score_lists(lists, points, 2), coverage(lists, 2, 6), lists)

    out = agreement(result("kafka", a_lists), result("offline", b_lists), k=2, rounds=200, seed=0)
    assert out["missing"] == 1
    assert out["identical_lists"] == 0.25  # only the first
    assert out["same_items"] == 0.5  # the first two
    assert out["mean_top_k_overlap"] == pytest.approx((2 + 2 + 0 + 1) / 8)
    # HR: kafka 1, 1, 0, 0 vs offline 1, 1, 1, 0 -> difference -0.25
    assert out["kafka_minus_offline"]["hr"]["diff"] == pytest.approx(-0.25)
