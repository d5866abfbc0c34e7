"""Offline evaluation of the session strategies on MovieLens-100K: which default, by quality first, then cost.

    python -m benchmarks.strategy_eval            # 150 sampled users, <= 80 ratings each: a few CPU minutes
    python -m benchmarks.strategy_eval --quick    # 40 users, <= 60 ratings each: about a minute

The 1,682 movies are indexed (``item_text`` encoded once, HNSW as in the worker). The ratings of a seeded sample
of users are replayed in timestamp order (rating -> event type by ``streamrec.streams.movielens.rating_to_type``;
``ts`` = the rating's ORIGINAL timestamp, so the session half-life acts on MovieLens time, not wall clock), in
micro-batches of ``--batch`` events driven like the worker's hot path (``benchmarks/strategy_replay.py``). After each
event with >= ``--warmup`` items of history the top-10 (purchased + recently seen excluded) is scored against the
user's next item (hit rate@10, MRR@10) and next 5 items (recall@10, NDCG@10). Compared: ``decayed_mean``,
``sequence`` (blend alpha 0.25/0.5/0.75/1.0), half-life variants, recent popularity (fed with ALL users' ratings)
and random. Cost per event = plan + encode + apply + search, measured on a cold embedding cache per strategy
(variants reuse the sequence run's embeddings: same texts, so the same encoder work; only their quality is new).

Writes ``benchmarks/results/strategy_<time>.json`` + ``.png`` (quality vs cost) and ``strategy_latest.*``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # a shared 2-core machine: one BLAS thread, like the worker
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # run as a script: make `streamrec` and `benchmarks` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.strategy_replay import (
    METRICS,
    EvalPoint,
    PopularityRecommender,
    RandomRecommender,
    Recommender,
    RunResult,
    StrategyRecommender,
    eval_points,
    paired_bootstrap,
    run_replay,
)
from streamrec.encoders import CachedEncoder, TextEncoder
from streamrec.index import HnswIndex
from streamrec.streams.catalog import item_text
from streamrec.streams.core import CoreConfig
from streamrec.streams.covisit import CovisitGraph
from streamrec.streams.movielens import Movie, Rating, load_movies, load_ratings, rating_to_type, replay_events
from streamrec.streams.schemas import Event, EventType
from streamrec.streams.session import SessionConfig, make_strategy

RESULTS = Path(__file__).resolve().parent / "results"
WORKER_CACHE = 50_000  # STREAMREC_ENCODER_CACHE_SIZE default
DAY = 86_400.0


# ------------------------------------------------------------------------------------------ encoders
class MemoEncoder:
    """Wraps the model: counts the texts it really encodes and remembers every vector, so variants whose texts
    were already encoded reuse them (their encoder cost is the cold run's, reported there)."""

    def __init__(self, inner: TextEncoder, memo: dict[str, npt.NDArray[np.float32]]) -> None:
        self.inner = inner
        self.memo = memo
        self.model_texts = 0
        self.model_calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.model_calls += 1
            self.model_texts += len(missing)
            for t, row in zip(missing, self.inner.encode(missing), strict=True):
                self.memo[t] = row
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return np.stack([self.memo[t] for t in texts]).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------ data
def sample_stream(ratings: Sequence[Rating], movies: Sequence[Movie], *, users: int, max_events: int,
                  search_fraction: float, seed: int) -> tuple[list[Event], list[str]]:
    """The replayed events of ``users`` seeded-sampled users (0: all), their first ``max_events`` ratings each
    (0: all), in timestamp order, with ``ts`` = the rating's original time."""
    all_users = sorted({r.user_id for r in ratings}, key=int)
    chosen = set(random.Random(seed).sample(all_users, users)) if 0 < users < len(all_users) else set(all_users)
    count: dict[str, int] = {}
    kept: list[Rating] = []
    for r in ratings:
        if r.user_id in chosen and (max_events <= 0 or count.get(r.user_id, 0) < max_events):
            count[r.user_id] = count.get(r.user_id, 0) + 1
            kept.append(r)
    events = [
        Event(e.user_id, e.type, None if e.type is EventType.SEARCH else e.item_id, e.query, e.orig_ts_ms, e.event_id)
        for e in replay_events(kept, movies, search_fraction=search_fraction, seed=seed, id_prefix="eval")
    ]
    return events, sorted(chosen, key=int)


def gap_stats(events: Sequence[Event]) -> dict[str, float]:
    """How far apart a user's consecutive events are, in MovieLens time (what the half-life acts on)."""
    last: dict[str, int] = {}
    gaps = []
    for e in events:
        if e.user_id in last:
            gaps.append((e.ts_ms - last[e.user_id]) / 1000)
        last[e.user_id] = e.ts_ms
    g = np.asarray(gaps)
    return {
        "median_gap_s": float(np.median(g)),
        "share_same_second": float((g == 0).mean()),
        "share_lt_60s": float((g < 60).mean()),
        "share_lt_1800s": float((g < 1800).mean()),
        "share_gt_1day": float((g > DAY).mean()),
    }


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # default | decayed_mean | sequence | popularity | random
    half_life_s: float = 1800.0
    alpha: float = 0.5
    cost_run: bool = True  # False: reuses the embeddings of an earlier run (its encoder cost is not its own)


def variants(quick: bool) -> list[Variant]:
    out = [
        Variant("default (+covisit)", "default"),
        Variant("decayed_mean", "decayed_mean"),
        Variant("sequence a=0.5", "sequence"),
        Variant("popularity", "popularity"),
        Variant("random", "random"),
        Variant("sequence a=0.25", "sequence", alpha=0.25, cost_run=False),
        Variant("sequence a=0.75", "sequence", alpha=0.75, cost_run=False),
        Variant("sequence a=1.0", "sequence", alpha=1.0, cost_run=False),
        Variant("decayed_mean hl=60s", "decayed_mean", half_life_s=60),
        Variant("decayed_mean hl=300s", "decayed_mean", half_life_s=300),
        Variant("decayed_mean hl=1d", "decayed_mean", half_life_s=DAY),
        Variant("decayed_mean hl=30d", "decayed_mean", half_life_s=30 * DAY),
        Variant("sequence a=0.5 hl=60s", "sequence", half_life_s=60, cost_run=False),
        Variant("sequence a=0.5 hl=1d", "sequence", half_life_s=DAY, cost_run=False),
    ]
    if quick:
        out = [v for v in out if v.name not in ("decayed_mean hl=30d", "decayed_mean hl=300s", "sequence a=0.75")]
    return out


def build_recommender(v: Variant, *, model: TextEncoder, memo: dict[str, npt.NDArray[np.float32]],
                      index: HnswIndex, titles: dict[str, str], catalogue: list[str],
                      background: list[tuple[int, str, float]], k: int, seed: int) -> tuple[Recommender, MemoEncoder]:
    config = SessionConfig(half_life_s=v.half_life_s, blend_alpha=v.alpha)
    # Cold runs get their own empty memo (every text really encoded); variants read the shared one.
    counting = MemoEncoder(model, {} if v.cost_run else memo)
    rec: Recommender
    if v.kind == "popularity":
        rec = PopularityRecommender(config, catalogue, k, background=background)
    elif v.kind == "random":
        rec = RandomRecommender(config, catalogue, k, seed=seed)
    elif v.kind == "default":  # the worker's default: the session strategy + the co-visitation graph, blended
        encoder = CachedEncoder(counting, capacity=WORKER_CACHE)
        rec = StrategyRecommender(make_strategy("decayed_mean", config), encoder, index, titles, k,
                                  covisit=CovisitGraph(), config=CoreConfig(k=k))
    else:  # the session strategy alone (+ the popularity prior), as before the collaborative signal
        encoder = CachedEncoder(counting, capacity=WORKER_CACHE)
        rec = StrategyRecommender(make_strategy(v.kind, config), encoder, index, titles, k,
                                  config=CoreConfig(k=k, covisit_weight=0.0))
    return rec, counting


def summarise(v: Variant, r: RunResult, enc: MemoEncoder, n_items: int) -> dict[str, Any]:
    cost = r.cost.per_event()
    cost["model_texts"] = enc.model_texts / max(1, r.cost.events)
    return {
        "name": v.name, "kind": v.kind, "half_life_s": v.half_life_s,
        "blend_alpha": v.alpha if v.kind == "sequence" else None,
        "metrics": {k: round(x, 5) for k, x in r.means().items()},
        "coverage": round(len(r.recommended) / n_items, 4),
        "cost_per_event": {k: round(x, 3) for k, x in cost.items()},
        "cost_is_own": v.cost_run,
        "wall_s": round(r.wall_s, 2),
    }


# ------------------------------------------------------------------------------------------ output
def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "note": "shared 2-core machine; a colleague's latency benchmarks ran at the same time"}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "hnswlib", "onnxruntime", "onnxruntime-gpu", "tokenizers", "streamrec"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'strategy':<22} {'HR@10':>6} {'MRR@10':>7} {'R@10/5':>7} {'NDCG@10':>8} {'cover':>6} "
            f"{'us/event':>9} {'encode':>8} {'search':>7} {'texts/ev':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m, c = r["metrics"], r["cost_per_event"]
        cost = f"{c['total_us']:>9.0f} {c['encode_us']:>8.0f} {c['search_us']:>7.0f}" if r["cost_is_own"] else (
            f"{'(cached)':>9} {'':>8} {c['search_us']:>7.0f}")
        lines.append(f"{r['name']:<22} {m['hit']:>6.4f} {m['rr']:>7.4f} {m['recall']:>7.4f} {m['ndcg']:>8.4f} "
                     f"{r['coverage']:>6.3f} {cost} {c['texts']:>8.2f}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq_costs = [r["cost_per_event"]["total_us"] for r in rows if r["kind"] == "sequence" and r["cost_is_own"]]
    seq_cost = seq_costs[0] if seq_costs else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, metric, label in ((axes[0], "hit", "hit rate@10 (next item)"), (axes[1], "ndcg", "NDCG@10 (next 5)")):
        span = max(r["metrics"][metric] for r in rows) - min(r["metrics"][metric] for r in rows) or 1.0
        placed: list[tuple[float, float]] = []  # (log x, label y) of the labels drawn, to keep them apart
        for r in sorted(rows, key=lambda r: -r["metrics"][metric]):
            # Variants reusing the sequence run's embeddings do the same encoder work: plotted at its cost, hollow.
            x = max(1.0, r["cost_per_event"]["total_us"] if r["cost_is_own"] else seq_cost)
            y = r["metrics"][metric]
            color = {"decayed_mean": "tab:blue", "sequence": "tab:red"}.get(r["kind"], "tab:gray")
            ax.scatter([x], [y], s=40, edgecolors=color, facecolors=color if r["cost_is_own"] else "none")
            label_y = y
            for px, py in placed:
                if abs(px - np.log10(x)) < 0.5 and label_y > py - 0.035 * span:
                    label_y = py - 0.035 * span
            placed.append((float(np.log10(x)), label_y))
            ax.annotate(r["name"], (x, y), xytext=(x * (0.85 if x > 3000 else 1.15), label_y), fontsize=7,
                        ha="right" if x > 3000 else "left", va="center")
        ax.set_xscale("log")
        ax.set_xlabel("compute per event, us (plan+encode+apply+search, cold cache; log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.01, "hollow: sequence variants (other alpha / half-life), same encoder work as sequence a=0.5",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=150, help="users sampled (seeded; 0: all 943) (default 150)")
    p.add_argument("--max-events", type=int, default=80, help="first N ratings per user (0: all) (default 80)")
    p.add_argument("--warmup", type=int, default=5, help="evaluate from a user's N-th item on (default 5)")
    p.add_argument("--n-next", type=int, default=5, help="next items scored by recall/NDCG (default 5)")
    p.add_argument("--k", type=int, default=10, help="recommendations per event (default 10)")
    p.add_argument("--batch", type=int, default=64, help="events per micro-batch, like STREAMREC_BATCH_MAX (64)")
    p.add_argument("--ef", type=int, default=64, help="HNSW ef, like STREAMREC_INDEX_EF (default 64)")
    p.add_argument("--search-fraction", type=float, default=0.0, help="ratings preceded by a synthetic search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="40 users, <= 60 ratings each, fewer variants")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.max_events = 40, 60
    started = time.perf_counter()
    cpu0 = time.process_time()
    load_before = os.getloadavg()

    from streamrec.commands.export import default_model_dir
    from streamrec.encoders.onnx import OnnxEncoderConfig, OnnxTextEncoder

    movies, ratings = load_movies(), load_ratings()
    events, users = sample_stream(ratings, movies, users=args.users, max_events=args.max_events,
                                  search_fraction=args.search_fraction, seed=args.seed)
    points: list[EvalPoint] = eval_points(events, warmup=args.warmup, n_next=args.n_next)
    groups = [pt.user_id for pt in points]
    background = [(r.ts_s * 1000, r.item_id, SessionConfig().weight_of(rating_to_type(r.rating))) for r in ratings]
    print(f"{len(users)} users, {len(events)} events, {len(points)} evaluated points", flush=True)

    model = OnnxTextEncoder(default_model_dir(), OnnxEncoderConfig(provider="cpu", intra_op_threads=1))
    items = [m.to_item() for m in movies]
    t = time.perf_counter()
    vectors = model.encode([item_text(it) for it in items])
    catalogue_encode_s = time.perf_counter() - t
    index = HnswIndex(model.dim, m=16, ef_construction=200, ef=args.ef)
    index.upsert([it.item_id for it in items], vectors)
    titles = {it.item_id: it.title for it in items}
    catalogue = [it.item_id for it in items]
    print(f"catalogue: {len(items)} items encoded in {catalogue_encode_s:.1f}s ({model.name})", flush=True)

    memo: dict[str, npt.NDArray[np.float32]] = {}
    rows: list[dict[str, Any]] = []
    results: dict[str, RunResult] = {}
    for v in variants(args.quick):
        rec, enc = build_recommender(v, model=model, memo=memo, index=index, titles=titles, catalogue=catalogue,
                                     background=background, k=args.k, seed=args.seed)
        r = run_replay(rec, events, points, k=args.k, batch_size=args.batch)
        if v.cost_run and v.kind == "sequence":
            memo.update(enc.memo)  # later sequence variants reuse these embeddings
        results[v.name] = r
        rows.append(summarise(v, r, enc, len(items)))
        m = rows[-1]["metrics"]
        print(f"  {v.name:<22} HR@10 {m['hit']:.4f} NDCG@10 {m['ndcg']:.4f}  ({r.wall_s:.1f}s)", flush=True)

    pairs = [(n, "decayed_mean") for n in results if n != "decayed_mean" and n != "random"]
    pairs += [("sequence a=0.5 hl=60s", "decayed_mean hl=60s"), ("sequence a=1.0", "decayed_mean hl=60s"),
              ("sequence a=1.0", "sequence a=0.5"), ("decayed_mean hl=60s", "popularity")]
    comparisons = {}
    for a, b in pairs:
        if a in results and b in results:
            comparisons[f"{a} - {b}"] = {
                metric: dict(zip(("mean", "lo95", "hi95"), (round(x, 5) for x in paired_bootstrap(
                    results[a].metrics[metric], results[b].metrics[metric], groups, seed=args.seed)), strict=True))
                for metric in METRICS
            }

    stamp = time.strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "benchmark": "strategy_eval",
        "command": "python -m benchmarks.strategy_eval" + (" --quick" if args.quick else ""),
        "machine": machine(), "versions": versions(),
        "load": {"loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "params": {**{k: (str(x) if isinstance(x, Path) else x) for k, x in vars(args).items()},
                   "encoder": model.name, "provider": model.provider, "intra_op_threads": 1,
                   "encoder_cache_capacity": WORKER_CACHE, "index": "HnswIndex(m=16, ef_construction=200)",
                   "popularity": "RecentPopularity(half_life_s=1800) fed with all 100k ratings in time order",
                   "metrics": {"hit": "next item in top-K (hit rate@K)", "rr": "1/rank of next item (MRR@K)",
                               "recall": "share of next-N items in top-K", "ndcg": "binary NDCG@K of next-N"}},
        "sample": {"users": len(users), "user_ids": users, "events": len(events), "evaluated_points": len(points),
                   "catalogue": len(items), "gaps": gap_stats(events)},
        "catalogue_encode_s": round(catalogue_encode_s, 2),
        "strategies": rows,
        "paired_bootstrap": comparisons,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    title = (f"MovieLens-100K next-item eval: {len(users)} users, {len(points)} points, K={args.k}, "
             f"{model.name} on CPU (1 thread), batch {args.batch}")
    for name in (f"strategy_{stamp}", "strategy_latest"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(rows, args.out / f"{name}.png", title)

    print()
    print(table(rows))
    print("\npaired user-bootstrap differences, a - b (mean [95% CI]):")
    for name, d in comparisons.items():
        print(f"  {name:<44} HR {d['hit']['mean']:+.4f} [{d['hit']['lo95']:+.4f}, {d['hit']['hi95']:+.4f}]  "
              f"NDCG {d['ndcg']['mean']:+.4f} [{d['ndcg']['lo95']:+.4f}, {d['ndcg']['hi95']:+.4f}]")
    print(f"\ngaps between a user's events (MovieLens time): {result['sample']['gaps']}")
    print(f"wrote {args.out}/strategy_{stamp}.json and .png (and strategy_latest.*) in {result['seconds']:.0f}s, "
          f"{result['cpu_seconds']:.0f} CPU s; load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
