"""Where the HNSW graph stops paying: full scan vs graph search, as the worker calls them.

    python -m benchmarks.scan_bench                 # ~1-2 min on 2 cores
    python -m benchmarks.scan_bench --sizes 1000,5000 --rounds 5

The worker searches one micro-batch of session vectors at a time (up to ``batch_max`` = 64 queries), each
with its own exclusions (the user's recently seen and purchased items, which lie *near* the session vector:
the hard case for over-fetch). For a small catalogue one matrix product over every item answers such a
batch exactly and cheaply (BLAS, GIL released) while the graph pays per query for a beam widened by the
exclusions. This benchmark times both paths of the same :class:`HnswIndex` (``full_scan_below`` = 0 vs
above N), interleaved in rounds, per catalogue size N, batch size and exclusion count, plus the graph's
recall@10 against the exact answer. The worker's default ``index_full_scan_below`` comes from here.

Writes ``scan_<time>.json`` + ``.png`` into the output folder (``--out``; default
``~/.cache/streamrec/bench``, outside git: the committed reference runs in ``benchmarks/results/`` are
chosen by hand, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks.index_bench import clustered, versions
from streamrec.index import HnswIndex
from streamrec.machine import machine

DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"  # outside git
DIM, K = 384, 10


def session_queries(data: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    """Session-like queries: the normalised mean of 5 random items of one neighbourhood, and that
    neighbourhood (the query's 200 nearest items) as the pool its exclusions are drawn from."""
    rng = np.random.default_rng(seed)
    anchors = data[rng.integers(0, len(data), n)]
    near = np.argsort(-(anchors @ data.T), axis=1)[:, :200]
    picks = np.stack([rng.choice(row, 5, replace=False) for row in near])
    q = data[picks].mean(axis=1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), [row.tolist() for row in near]


def run_size(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = clustered(n, DIM, seed=n, clusters=max(10, n // 100), noise=0.8)
    names = [f"i{j}" for j in range(n)]
    graph = HnswIndex(DIM, ef=args.ef, initial_capacity=n)
    graph.upsert(names, data)
    scan = HnswIndex(DIM, ef=args.ef, initial_capacity=n, full_scan_below=n)
    scan.upsert(names, data)
    q_all, near = session_queries(data, max(args.batches) * 4, seed=n + 1)
    rows = []
    for batch in args.batches:
        for n_excl in args.exclusions:
            excl = [set(names[j] for j in near[i][:n_excl]) for i in range(len(q_all))]
            times: dict[str, list[float]] = {"graph": [], "scan": []}
            got: dict[str, list[tuple[str, ...]]] = {"graph": [], "scan": []}
            for r in range(args.rounds):
                s = (r * batch) % (len(q_all) - batch + 1)
                q, ex = q_all[s : s + batch], excl[s : s + batch]
                for name, index in (
                    (("graph", graph), ("scan", scan)) if r % 2 == 0 else (("scan", scan), ("graph", graph))
                ):
                    t = time.perf_counter()
                    hits = index.search(q, K, exclude=ex)
                    times[name].append((time.perf_counter() - t) * 1e3)
                    got[name].extend(h.ids for h in hits)
            rec = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got["graph"], got["scan"], strict=True)]))
            row = {
                "items": n,
                "batch": batch,
                "exclusions": n_excl,
                "rounds": args.rounds,
                "graph_ms_per_batch_p50": float(np.median(times["graph"])),
                "scan_ms_per_batch_p50": float(np.median(times["scan"])),
                "graph_recall_at_10": rec,
            }
            row["scan_over_graph"] = row["scan_ms_per_batch_p50"] / row["graph_ms_per_batch_p50"]
            rows.append(row)
            print(
                f"N={n:>6} batch={batch:>3} excl={n_excl:>3}: graph {row['graph_ms_per_batch_p50']:7.2f} ms "
                f"(recall {rec:.3f})  scan {row['scan_ms_per_batch_p50']:7.2f} ms  "
                f"scan/graph {row['scan_over_graph']:.2f}",
                flush=True,
            )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for batch in sorted({r["batch"] for r in rows}):
        for n_excl in sorted({r["exclusions"] for r in rows}):
            sel = sorted(
                (r for r in rows if r["batch"] == batch and r["exclusions"] == n_excl), key=lambda r: r["items"]
            )
            ax.plot(
                [r["items"] for r in sel],
                [r["scan_over_graph"] for r in sel],
                marker="o",
                label=f"batch {batch}, {n_excl} exclusions",
            )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue items (N)")
    ax.set_ylabel("full scan time / graph time (per batch, p50)")
    ax.set_title(f"full scan vs HNSW (ef {result['settings']['ef']}, k {K}, 384-d): below 1 the scan wins")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000,10000,20000")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--exclusions", default="0,50,200")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--ef", type=int, default=32)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.exclusions = [int(x) for x in args.exclusions.split(",")]
    started = time.time()
    rows = [row for n in (int(x) for x in args.sizes.split(",")) for row in run_size(n, args)]
    result = {
        "benchmark": "scan",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": "python -m benchmarks.scan_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(args.note or "2-core machine, nothing else running"),
        "versions": versions(),
        "settings": {
            "ef": args.ef,
            "k": K,
            "dim": DIM,
            "rounds": args.rounds,
            "queries": "mean of 5 items of one neighbourhood; exclusions: that neighbourhood's nearest",
        },
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    (out / f"scan_{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / f"scan_{stamp}.png")
    print(f"wrote {out}/scan_{stamp}.json/.png in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
