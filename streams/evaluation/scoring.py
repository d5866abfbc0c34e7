"""Evaluation points, ranking metrics, coverage and the paired bootstrap over users.

Evaluation points (next-item prediction): for every user and every pair of consecutive events (t, t+1) of
that user where event t+1 names an item (any type but ``search``), the list published after event t is scored
against the item of event t+1. So every item-naming event but a user's first is a target once, and the same
points are used for every recommender. With K = 10 and ``rank`` the 0-based position of the target in the
first K items of the list:

    HR@K   = 1 if the target is in the list, else 0
    MRR@K  = 1 / (rank + 1), 0 if absent
    NDCG@K = 1 / log2(rank + 2), 0 if absent      (one relevant item: the ideal DCG is 1)

averaged over the points (a user with more events weighs more, as in a live stream). Catalogue coverage: the
share of the catalogue that appears in at least one scored list.

Intervals: the paired bootstrap over USERS -- a user's points are correlated, so whole users are resampled
(with replacement), and for each resample the mean over the resampled users' points of both systems is taken
(same users, same points: paired). Reported: the mean difference and the ratio of means with their 2.5 / 97.5
percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamrec.streams.schemas import Event, EventType

__all__ = [
    "METRICS",
    "BootstrapInterval",
    "EvalPoint",
    "PointScores",
    "bootstrap_mean",
    "coverage",
    "eval_points",
    "paired_bootstrap",
    "score_lists",
]

METRICS = ("hr", "mrr", "ndcg")
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EvalPoint:
    """The list published after the event at ``position`` (index in the log) is scored against ``target``."""

    position: int
    user_id: str
    target: str


def names_item(e: Event) -> bool:
    return e.item_id is not None and e.type is not EventType.SEARCH


def eval_points(events: Sequence[Event]) -> list[EvalPoint]:
    """The evaluation points of a time-ordered log, ordered by ``position``."""
    last: dict[str, int] = {}  # user -> position of the user's previous event
    points = []
    for pos, e in enumerate(events):
        before = last.get(e.user_id)
        if before is not None and names_item(e):
            assert e.item_id is not None
            points.append(EvalPoint(before, e.user_id, e.item_id))
        last[e.user_id] = pos
    points.sort(key=lambda p: p.position)
    return points


@dataclass(frozen=True)
class PointScores:
    """Per evaluation point (aligned with the point list): the metrics, and the user of each point."""

    hr: Floats
    mrr: Floats
    ndcg: Floats
    users: tuple[str, ...]

    def metric(self, name: str) -> Floats:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r} (one of {METRICS})")
        values: Floats = getattr(self, name)
        return values

    def means(self) -> dict[str, float]:
        return {m: float(self.metric(m).mean()) if len(self.users) else math.nan for m in METRICS}


def score_lists(lists: Sequence[Sequence[str]], points: Sequence[EvalPoint], k: int) -> PointScores:
    """Score ``lists[i]`` (the list after ``points[i].position``) against ``points[i].target`` at ``k``."""
    if len(lists) != len(points):
        raise ValueError(f"{len(lists)} lists for {len(points)} points")
    hr = np.zeros(len(points))
    mrr = np.zeros(len(points))
    ndcg = np.zeros(len(points))
    for i, (recs, point) in enumerate(zip(lists, points, strict=True)):
        top = list(recs[:k])
        if point.target in top:
            rank = top.index(point.target)
            hr[i] = 1.0
            mrr[i] = 1.0 / (rank + 1)
            ndcg[i] = 1.0 / math.log2(rank + 2)
    return PointScores(hr, mrr, ndcg, tuple(p.user_id for p in points))


def coverage(lists: Sequence[Sequence[str]], k: int, catalogue_size: int) -> float:
    """Share of the catalogue recommended at least once in the first ``k`` items of ``lists``."""
    if catalogue_size <= 0:
        return math.nan
    return len({item for recs in lists for item in recs[:k]}) / catalogue_size


@dataclass(frozen=True, slots=True)
class BootstrapInterval:
    """``a`` vs ``b`` over the same points: mean difference and ratio of means, each with a 95 % interval."""

    diff: float
    diff_lo: float
    diff_hi: float
    ratio: float
    ratio_lo: float
    ratio_hi: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 6) for k in self.__slots__}


def _user_sums(values: Sequence[Floats], users: Sequence[str]) -> tuple[list[Floats], Floats]:
    index: dict[str, int] = {}
    g = np.fromiter((index.setdefault(u, len(index)) for u in users), dtype=np.int64, count=len(users))
    counts = np.bincount(g, minlength=len(index)).astype(np.float64)
    return [np.bincount(g, weights=v, minlength=len(index)).astype(np.float64) for v in values], counts


def _draws(n_users: int, rounds: int, seed: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, n_users, size=(rounds, n_users))


def paired_bootstrap(
    a: Floats, b: Floats, users: Sequence[str], *, rounds: int = 2000, seed: int = 0
) -> BootstrapInterval:
    """``a`` and ``b``: per-point values of two systems on the same points; ``users``: each point's user."""
    if not (len(a) == len(b) == len(users)) or not len(users):
        raise ValueError("paired_bootstrap needs equally long, non-empty a, b and users")
    (sa, sb), counts = _user_sums([a, b], users)
    draws = _draws(len(counts), rounds, seed)
    n = counts[draws].sum(axis=1)
    ma, mb = sa[draws].sum(axis=1) / n, sb[draws].sum(axis=1) / n
    diff = ma - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mb > 0, ma / np.where(mb > 0, mb, 1.0), np.inf)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    d_lo, d_hi = np.percentile(diff, [2.5, 97.5])
    r_lo, r_hi = np.percentile(ratio, [2.5, 97.5], method="nearest")  # ratios may be infinite (b = 0)
    return BootstrapInterval(
        mean_a - mean_b, float(d_lo), float(d_hi), mean_a / mean_b if mean_b > 0 else math.inf, float(r_lo), float(r_hi)
    )


def bootstrap_mean(a: Floats, users: Sequence[str], *, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of ``a``, resampling users."""
    (sa,), counts = _user_sums([a], users)
    draws = _draws(len(counts), rounds, seed)
    means = sa[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)
