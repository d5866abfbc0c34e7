"""The strategy evaluation's core (benchmarks/strategy_replay.py) on a tiny synthetic catalogue, no model."""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root: `benchmarks` is not installed

from benchmarks.strategy_replay import (
    Cost,
    PopularityRecommender,
    RandomRecommender,
    StrategyRecommender,
    eval_points,
    paired_bootstrap,
    run_replay,
    score_list,
)
from streamrec.index import ExactIndex
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import SessionConfig, make_strategy

DIM = 8
K = 3


class ClusterEncoder:
    """Deterministic fake: a text "c<j> ..." maps near axis j (plus a small hash-seeded offset); session texts
    (" ; "-joined titles) map to the mean of their parts, so a session of cluster-j items points at cluster j."""

    dim = DIM
    name = "fake-cluster"

    def __init__(self) -> None:
        self.calls = 0

    def _one(self, text: str) -> npt.NDArray[np.float32]:
        parts = text.split(" ; ")
        if len(parts) > 1:
            total = np.sum([self._one(p) for p in parts], axis=0)
            mean: npt.NDArray[np.float32] = (total / np.linalg.norm(total)).astype(np.float32)
            return mean
        cluster = int(text.split()[0][1:])
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        v = np.zeros(DIM, np.float64)
        v[cluster] = 1.0
        v += 0.05 * np.random.default_rng(seed).standard_normal(DIM)
        out: npt.NDArray[np.float32] = (v / np.linalg.norm(v)).astype(np.float32)
        return out

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return np.stack([self._one(t) for t in texts]) if texts else np.empty((0, DIM), np.float32)


def catalogue() -> tuple[ExactIndex, dict[str, str]]:
    """4 clusters x 4 items: item "j-i" titled "c<j> item <i>"."""
    enc = ClusterEncoder()
    titles = {f"{j}-{i}": f"c{j} item {i}" for j in range(4) for i in range(4)}
    index = ExactIndex(DIM)
    ids = list(titles)
    index.upsert(ids, enc.encode([titles[i] for i in ids]))
    return index, titles


def stream(users: dict[str, list[str]]) -> list[Event]:
    """Users' item events interleaved in time (one event per user per tick, seconds apart)."""
    out = []
    for tick in range(max(len(v) for v in users.values())):
        for u, items in users.items():
            if tick < len(items):
                out.append(Event(u, EventType.CLICK, items[tick], None, 1_000_000 + tick * 1000, f"{u}:{tick}"))
    return out


class Oracle:
    """Answers the user's true next items (or, with ``anti``, items the user never touches)."""

    def __init__(self, users: dict[str, list[str]], all_items: list[str], anti: bool = False) -> None:
        self.users, self.all_items, self.anti = users, all_items, anti
        self.pos: dict[str, int] = {}
        self.cost = Cost()

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        out = []
        for e in batch:
            n = self.pos[e.user_id] = self.pos.get(e.user_id, 0) + 1
            if self.anti:
                mine = set(self.users[e.user_id])
                out.append([i for i in self.all_items if i not in mine][:K])
            else:
                out.append(self.users[e.user_id][n : n + K])
        return out


# ------------------------------------------------------------------------------------------ metrics
def test_score_list_by_hand() -> None:
    got = score_list(["a", "b", "c"], ["b", "x", "c", "y", "z"], k=3)
    assert got["hit"] == 1.0 and got["rr"] == 0.5
    assert got["recall"] == pytest.approx(2 / 5)
    idcg = sum(1 / math.log2(i + 2) for i in range(3))  # 5 targets, but at most K=3 can be ranked
    assert got["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / idcg)
    miss = score_list(["a", "b", "c"], ["x", "b"], k=3)
    assert miss["hit"] == 0.0 and miss["rr"] == 0.0 and miss["recall"] == 0.5
    assert score_list(["q", "a"], ["a"], k=1)["hit"] == 0.0  # only the top k count


def test_eval_points_warmup_and_targets() -> None:
    events = stream({"u": ["0-0", "0-1", "0-2", "0-3"], "v": ["1-0"]})
    points = eval_points(events, warmup=2, n_next=2)
    assert [(p.user_id, p.targets) for p in points] == [("u", ("0-2", "0-3")), ("u", ("0-3",))]
    assert all(events[p.position].user_id == "u" for p in points)


# ------------------------------------------------------------------------------------------ the replay
USERS = {"u1": ["0-0", "0-1", "0-2", "0-3"], "u2": ["2-0", "2-1", "2-2", "2-3"], "u3": ["1-3", "1-2", "1-1", "1-0"]}


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_oracle_scores_one_and_anti_oracle_zero(batch_size: int) -> None:
    events = stream(USERS)
    points = eval_points(events, warmup=1, n_next=K)
    assert len(points) == 9
    all_items = sorted(catalogue()[1])
    perfect = run_replay(Oracle(USERS, all_items), events, points, k=K, batch_size=batch_size).means()
    assert perfect == {"hit": 1.0, "rr": 1.0, "recall": 1.0, "ndcg": 1.0}
    anti = run_replay(Oracle(USERS, all_items, anti=True), events, points, k=K, batch_size=batch_size).means()
    assert anti == {"hit": 0.0, "rr": 0.0, "recall": 0.0, "ndcg": 0.0}


@pytest.mark.parametrize("name", ["decayed_mean", "sequence"])
def test_session_strategies_find_the_users_cluster(name: str) -> None:
    """Each user stays in one cluster of 4: after any event the rest of the cluster (<= 3 items, seen ones
    excluded) is exactly the top 3, so both strategies score a perfect hit rate and recall."""
    index, titles = catalogue()
    events = stream(USERS)
    points = eval_points(events, warmup=1, n_next=K)
    enc = ClusterEncoder()
    rec = StrategyRecommender(make_strategy(name, SessionConfig()), enc, index, titles, K)
    r = run_replay(rec, events, points, k=K, batch_size=2)
    assert r.means()["hit"] == 1.0 and r.means()["recall"] == 1.0
    assert r.cost.events == len(events) and r.cost.fallbacks == 0
    if name == "sequence":  # one encoder call per batch, one session text per event
        assert enc.calls == r.cost.batches and r.cost.texts_requested == len(events)
    else:  # every item is in the index: nothing to encode
        assert enc.calls == 0 and r.cost.texts_requested == 0
    fresh = StrategyRecommender(make_strategy(name, SessionConfig()), ClusterEncoder(), index, titles, K)
    assert set(fresh.recommend(events[:1])[0]) == {"0-1", "0-2", "0-3"}  # u1's cluster, its seen item excluded


def test_baselines_respect_exclusions_and_are_deterministic() -> None:
    _, titles = catalogue()
    items = sorted(titles)
    events = stream(USERS)
    points = eval_points(events, warmup=1, n_next=K)
    config = SessionConfig()
    pop = PopularityRecommender(config, items, K, background=[(0, "3-3", 5.0), (1, "3-2", 1.0)])
    lists = pop.recommend(events)
    assert lists[0][:2] == ["3-3", "3-2"]  # background popularity first, then the catalogue top-up
    seen: dict[str, set[str]] = {}
    for e, recs in zip(events, lists, strict=True):
        seen.setdefault(e.user_id, set()).add(str(e.item_id))
        assert len(recs) == K and not seen[e.user_id] & set(recs)
    a = run_replay(RandomRecommender(config, items, K, seed=3), events, points, k=K, batch_size=4)
    b = run_replay(RandomRecommender(config, items, K, seed=3), events, points, k=K, batch_size=4)
    assert a.means() == b.means() and a.recommended == b.recommended


def test_paired_bootstrap_groups_users() -> None:
    a = np.array([1.0, 1.0, 0.0, 0.0])
    b = np.zeros(4)
    mean, lo, hi = paired_bootstrap(a, b, ["u", "u", "v", "v"], rounds=200)
    assert mean == 0.5 and 0.0 <= lo <= mean <= hi <= 1.0
    same = paired_bootstrap(a, a, ["u", "u", "v", "v"], rounds=50)
    assert same == (0.0, 0.0, 0.0)

