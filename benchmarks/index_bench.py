"""Item-index benchmark: streamrec's HnswIndex (hnswlib) vs exact numpy vs faiss HNSW, side by side in one run.

    python -m benchmarks.index_bench            # synthetic 10k + 100k, MovieLens titles (if the encoder loads)
    python -m benchmarks.index_bench --quick    # 10k + MovieLens, fewer queries: a couple of minutes

Per data set: build time and memory, single-query latency p50/p99 at k=10 over an ef sweep with recall@10
against exact ground truth (our API, raw hnswlib on the same graph, faiss IndexHNSWFlat, exact numpy),
k=10 with 50 exclusions (the query's own 50 nearest items, the hard case) by over-fetch+post-filter vs
hnswlib's filter callback, upsert throughput while a thread keeps searching (and that thread's latency),
save/load time; at 10k also update-in-place vs delete+reinsert. Latencies are measured with rounds
interleaved between engines so a noisy neighbour hits them alike: trust ratios over absolute times.

Writes ``index_<time>.json`` + ``.png`` (recall vs p50 latency) into the output folder (``--out``; default
``~/.cache/streamrec/bench``, outside git: the committed reference runs in ``benchmarks/results/`` are
chosen by hand, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS thread, like every other engine here (decided before numpy loads). With OpenBLAS's default two
# threads on this loaded 2-core machine a 384 x 10k mat-vec took 7.4-7.8 ms instead of 0.7 ms.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

if __package__ in (None, ""):  # run as a script: make `streamrec` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from streamrec.index import ExactIndex, HnswIndex
from streamrec.machine import machine

DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"  # outside git
K = 10
N_EXCL = 50
ML100K_ITEMS = Path(".venv/lib/python3.11/site-packages/recbole/dataset_example/ml-100k/ml-100k.item")
MODEL_DIR = Path.home() / ".cache/streamrec/models/all-MiniLM-L6-v2"


# ------------------------------------------------------------------------------------------ helpers
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


MACHINE_NOTE = "shared 2-core machine; another job (ONNX export/benchmarks) ran CPU-heavy work at the same time"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "hnswlib", "faiss-cpu"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def clustered(n: int, dim: int, seed: int, clusters: int, noise: float) -> np.ndarray:
    """Unit vectors around ``clusters`` centres; ``noise`` is the noise-to-centre norm ratio (1.0 = hard)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        sc = queries[s : s + 256] @ data.T
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, top, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(top, order, 1)
    return out


def exact_topk_excluding(data: np.ndarray, queries: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 64):
        sc = queries[s : s + 64] @ data.T
        np.put_along_axis(sc, excluded[s : s + 64], -np.inf, 1)
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, top, 1), axis=1)
        out[s : s + 64] = np.take_along_axis(top, order, 1)
    return out


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(map(int, f)) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def pct(lat_ms: list[float]) -> dict[str, float]:
    a = np.asarray(lat_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def interleaved(engines: dict[str, Callable[[int], list[int]]], nq: int, rounds: int) -> dict[str, Any]:
    """Time single queries of every engine, round-robin per query block, and collect their results."""
    lat: dict[str, list[float]] = {e: [] for e in engines}
    res: dict[str, list[list[int]]] = {e: [[] for _ in range(nq)] for e in engines}
    blocks = np.array_split(np.arange(nq), rounds)
    for block in blocks:
        for name, fn in engines.items():
            for i in block.tolist():
                t = time.perf_counter()
                r = fn(i)
                lat[name].append((time.perf_counter() - t) * 1e3)
                res[name][i] = r
    return {"lat": lat, "res": res}


def to_int(ids: tuple[str, ...]) -> list[int]:
    return [int(x[1:]) for x in ids]


# ------------------------------------------------------------------------------------------ one data set
def bench_dataset(name: str, data: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    faiss: Any
    try:
        import faiss
    except ImportError:  # the peer is optional: pip install faiss-cpu
        faiss = None

    n, dim = data.shape
    nq = len(queries)
    ids = [f"i{j}" for j in range(n)]
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": nq}
    print(f"\n== {name}: n={n} dim={dim} queries={nq}", flush=True)
    truth = exact_topk(data, queries, K)
    full_rank = exact_topk(data, queries, N_EXCL + K)
    excl_idx = full_rank[:, :N_EXCL]
    truth_excl = full_rank[:, N_EXCL:]

    # ---- build
    m = args.m
    r0 = rss_bytes()
    t = time.perf_counter()
    ours = HnswIndex(
        dim,
        m=m,
        ef_construction=args.ef_construction,
        ef=args.ef,
        initial_capacity=n,
        write_chunk=max(n, 1),
        add_threads=args.build_threads,
    )
    ours.upsert(ids, data)
    build_ours = time.perf_counter() - t
    mem_ours = rss_bytes() - r0
    ours.add_threads, ours.write_chunk, ours.write_slice_s = 1, 1, 0.0  # back to the serving defaults
    fx: Any = None
    build_faiss, mem_faiss = float("nan"), 0
    if faiss is not None:
        faiss.omp_set_num_threads(args.build_threads)
        r0 = rss_bytes()
        t = time.perf_counter()
        fx = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        fx.hnsw.efConstruction = args.ef_construction
        fx.add(data)
        build_faiss = time.perf_counter() - t
        mem_faiss = rss_bytes() - r0
        faiss.omp_set_num_threads(1)
    exact = ExactIndex(dim, initial_capacity=n)
    t = time.perf_counter()
    exact.upsert(ids, data)
    build_exact = time.perf_counter() - t
    out["build"] = {
        "hnswlib_streamrec": {
            "seconds": build_ours,
            "items_per_s": n / build_ours,
            "rss_delta_bytes": mem_ours,
            "stats_memory_bytes": ours.stats().memory_bytes,
            "threads": args.build_threads,
        },
        "faiss_hnsw": {
            "seconds": build_faiss,
            "items_per_s": n / build_faiss,
            "rss_delta_bytes": mem_faiss,
            "threads": args.build_threads,
        },
        "exact_numpy": {"seconds": build_exact, "matrix_bytes": data.nbytes},
    }
    print(
        f"build: ours {build_ours:.1f}s ({mem_ours / 2**20:.0f} MiB RSS)  faiss {build_faiss:.1f}s "
        f"({mem_faiss / 2**20:.0f} MiB)",
        flush=True,
    )

    # ---- ef sweep, single queries, interleaved
    graph = ours._g  # the same graph, queried raw, to show the wrapper's cost
    sweep = []
    for ef in args.ef_sweep:
        ours.ef = ef
        if fx is not None:
            fx.hnsw.efSearch = ef

        def f_ours(i: int) -> list[int]:
            return to_int(ours.search(queries[i], K)[0].ids)

        def f_raw(i: int, ef: int = ef) -> list[int]:
            return graph.knn_query(queries[i : i + 1], k=max(ef, K), num_threads=1)[0][0][:K].tolist()  # type: ignore[no-any-return]

        def f_faiss(i: int) -> list[int]:
            return fx.search(queries[i : i + 1], K)[1][0].tolist()  # type: ignore[no-any-return]

        engines: dict[str, Callable[[int], list[int]]] = {
            "hnswlib_streamrec": f_ours,
            "hnswlib_raw": f_raw,
            "faiss_hnsw": f_faiss,
        }
        if fx is None:
            del engines["faiss_hnsw"]
        r = interleaved(engines, nq, args.rounds)
        row: dict[str, Any] = {"ef": ef}
        for e in r["lat"]:
            row[e] = {**pct(r["lat"][e]), "recall_at_10": recall(r["res"][e], truth)}
        sweep.append(row)
        print(
            f"ef={ef:4d}  "
            + "  ".join(
                f"{e}: p50 {row[e]['p50_ms']:.3f} p99 {row[e]['p99_ms']:.3f} R {row[e]['recall_at_10']:.3f}"
                for e in r["lat"]
            ),
            flush=True,
        )
    out["sweep"] = sweep
    ours.ef = args.ef

    # ---- exact numpy (fewer queries: it is slow)
    ne = min(nq, args.exact_queries)

    def f_exact(i: int) -> list[int]:
        return to_int(exact.search(queries[i], K)[0].ids)

    def f_default(i: int) -> list[int]:
        return to_int(ours.search(queries[i], K)[0].ids)

    r = interleaved({"exact_numpy": f_exact, "hnswlib_streamrec": f_default}, ne, args.rounds)
    ex_row = {**pct(r["lat"]["exact_numpy"]), "recall_at_10": recall(r["res"]["exact_numpy"], truth[:ne])}
    de_row = {**pct(r["lat"]["hnswlib_streamrec"]), "recall_at_10": recall(r["res"]["hnswlib_streamrec"], truth[:ne])}
    out["exact_vs_default"] = {
        "exact_numpy": ex_row,
        "hnswlib_streamrec": de_row,
        "ef": args.ef,
        "speedup_p50": ex_row["p50_ms"] / de_row["p50_ms"],
    }
    print(
        f"exact numpy p50 {ex_row['p50_ms']:.2f} ms vs ours (ef {args.ef}) {de_row['p50_ms']:.3f} ms: "
        f"{out['exact_vs_default']['speedup_p50']:.0f}x",
        flush=True,
    )

    # ---- 50 exclusions: over-fetch vs filter callback vs none; the query's 50 nearest (hard) or 50 random ids
    rand_idx = np.random.default_rng(9).integers(0, n, (nq, N_EXCL))
    scenarios = {
        "nearest": (excl_idx, truth_excl),
        "random": (rand_idx, exact_topk_excluding(data, queries, rand_idx, K)),
    }
    filt = HnswIndex.__new__(HnswIndex)  # a second view of the same graph and maps, exclusion="filter"
    filt.__dict__.update(ours.__dict__)
    filt.exclusion = "filter"
    excl_rows = []
    for scenario, (ex_idx, ex_truth) in scenarios.items():
        ex_sets = [{f"i{j}" for j in row_} for row_ in ex_idx.tolist()]
        for ef in args.excl_ef:
            ours.ef = filt.ef = ef

            def f_none(i: int) -> list[int]:
                return to_int(ours.search(queries[i], K)[0].ids)

            def f_over(i: int, ex_sets: list[set[str]] = ex_sets) -> list[int]:
                return to_int(ours.search(queries[i], K, exclude=[ex_sets[i]])[0].ids)

            def f_filt(i: int, ex_sets: list[set[str]] = ex_sets) -> list[int]:
                return to_int(filt.search(queries[i], K, exclude=[ex_sets[i]])[0].ids)

            r = interleaved({"no_exclusions": f_none, "overfetch": f_over, "filter_callback": f_filt}, nq, args.rounds)
            row = {"excluded": scenario, "ef": ef}
            for e, tr in (("no_exclusions", truth), ("overfetch", ex_truth), ("filter_callback", ex_truth)):
                row[e] = {**pct(r["lat"][e]), "recall_at_10": recall(r["res"][e], tr)}
            for e in ("overfetch", "filter_callback"):
                row[e]["p50_vs_no_exclusions"] = row[e]["p50_ms"] / row["no_exclusions"]["p50_ms"]
            excl_rows.append(row)
            o, f = row["overfetch"], row["filter_callback"]
            print(
                f"excl {scenario:7s} ef={ef:3d} none {row['no_exclusions']['p50_ms']:.3f} ms; overfetch "
                f"{o['p50_ms']:.3f} ms ({o['p50_vs_no_exclusions']:.2f}x, R {o['recall_at_10']:.3f}); filter "
                f"{f['p50_ms']:.3f} ms ({f['p50_vs_no_exclusions']:.2f}x, R {f['recall_at_10']:.3f})",
                flush=True,
            )
    out["exclusions_50"] = excl_rows
    out["exclusions_under_gil_contention"] = gil_contention(ours, filt, queries, excl_idx, args)
    ours.ef = args.ef

    # ---- upserts while serving, for two write-lock slicings
    # (each on a fresh copy of the built index, loaded from a snapshot, so they start from the same state)
    out["upsert_while_serving"] = []
    copy_dir = Path(tempfile.mkdtemp(prefix="index-bench-copy-"))
    try:
        ours.save(copy_dir)
        default_switch = sys.getswitchinterval()
        configs = [(c, sl, default_switch) for c, sl in args.write_slicing]
        configs += [(1, 0.0, sw) for sw in args.switch_intervals]
        for chunk, slice_s, switch in configs:
            fresh, _ = HnswIndex.load(copy_dir, write_chunk=int(chunk), write_slice_s=slice_s)
            sys.setswitchinterval(switch)
            try:
                row = upsert_while_serving(fresh, data, queries, args)
            finally:
                sys.setswitchinterval(default_switch)
            out["upsert_while_serving"].append(
                {"write_chunk": int(chunk), "write_slice_s": slice_s, "gil_switch_interval_s": switch, **row}
            )
            del fresh
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)

    # ---- save / load
    tmp = Path(tempfile.mkdtemp(prefix="index-bench-"))
    try:
        t = time.perf_counter()
        snap = ours.save(tmp, extra={"offsets": {"0": 1}})
        t_save = time.perf_counter() - t
        size = sum(p.stat().st_size for p in snap.iterdir())
        t = time.perf_counter()
        HnswIndex.load(tmp)
        t_load = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["snapshot"] = {"save_s": t_save, "load_s": t_load, "bytes": size}
    print(f"snapshot: save {t_save:.2f}s load {t_load:.2f}s {size / 2**20:.0f} MiB", flush=True)
    return out


def gil_contention(
    ours: HnswIndex, filt: HnswIndex, queries: np.ndarray, excl_idx: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """Two threads search with 50 exclusions each while a third thread runs pure Python (an event loop,
    a decoder): over-fetch keeps the whole search inside hnswlib without the GIL; the filter callback needs
    the GIL for every node it visits."""
    ex_sets = [{f"i{j}" for j in row_} for row_ in excl_idx.tolist()]
    out: dict[str, Any] = {"search_threads": 2, "busy_python_threads": 1, "seconds": args.contention_s}
    for name, index in (("overfetch", ours), ("filter_callback", filt)):
        stop = threading.Event()
        lat: list[float] = []

        def busy(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                sum(range(2000))

        def searcher(
            offset: int, index: HnswIndex = index, lat: list[float] = lat, stop: threading.Event = stop
        ) -> None:
            i = offset
            while not stop.is_set():
                j = i % len(queries)
                t = time.perf_counter()
                index.search(queries[j], K, exclude=[ex_sets[j]])
                lat.append((time.perf_counter() - t) * 1e3)
                i += 7

        threads = [threading.Thread(target=busy)] + [threading.Thread(target=searcher, args=(o,)) for o in (0, 3)]
        for th in threads:
            th.start()
        time.sleep(args.contention_s)
        stop.set()
        for th in threads:
            th.join()
        out[name] = {**pct(lat), "queries_per_s": len(lat) / args.contention_s}
    print(
        f"50 exclusions, 2 searching threads + 1 busy Python thread: overfetch p50/p99 "
        f"{out['overfetch']['p50_ms']:.3f}/{out['overfetch']['p99_ms']:.3f} ms "
        f"({out['overfetch']['queries_per_s']:.0f} q/s); filter callback "
        f"{out['filter_callback']['p50_ms']:.3f}/{out['filter_callback']['p99_ms']:.3f} ms "
        f"({out['filter_callback']['queries_per_s']:.0f} q/s)",
        flush=True,
    )
    return out


def upsert_while_serving(
    index: HnswIndex, data: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """A searcher thread runs single k=10 queries; first alone, then while the main thread upserts."""
    stop = threading.Event()
    lat: list[float] = []

    def searcher() -> None:
        i = 0
        while not stop.is_set():
            q = queries[i % len(queries)]
            t = time.perf_counter()
            index.search(q, K)
            lat.append((time.perf_counter() - t) * 1e3)
            i += 1

    th = threading.Thread(target=searcher)
    th.start()
    time.sleep(args.serve_s)
    idle = pct(lat)
    lat.clear()
    rng = np.random.default_rng(7)
    n_new = min(args.upserts, len(data) // 2)
    noise = rng.standard_normal((n_new, data.shape[1])).astype(np.float32)
    fresh = data[rng.integers(0, len(data), n_new)] + 0.3 * noise
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    new_ids = [f"new{j}" for j in range(n_new)]
    upd_ids = [f"i{j}" for j in rng.choice(len(data), n_new, replace=False)]
    t = time.perf_counter()
    for s in range(0, n_new, 64):
        index.upsert(new_ids[s : s + 64], fresh[s : s + 64])
    t_ins = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n_new, 64):
        index.upsert(upd_ids[s : s + 64], fresh[s : s + 64][::-1])
    t_upd = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n_new, 64):
        index.delete(new_ids[s : s + 64])
    t_del = time.perf_counter() - t
    stop.set()
    th.join()
    busy = pct(lat)
    for s in range(0, n_new, 64):  # put the catalogue back as it was
        index.upsert(upd_ids[s : s + 64], data[[int(x[1:]) for x in upd_ids[s : s + 64]]])
    res = {
        "batch": 64,
        "items": n_new,
        "insert_items_per_s": n_new / t_ins,
        "update_items_per_s": n_new / t_upd,
        "delete_items_per_s": n_new / t_del,
        "search_idle": idle,
        "search_during_writes": busy,
        "searches_during_writes": len(lat),
    }
    print(
        f"while serving (chunk {index.write_chunk}, slice {index.write_slice_s * 1e3:g} ms, "
        f"GIL switch {sys.getswitchinterval() * 1e3:g} ms): "
        f"insert {res['insert_items_per_s']:.0f}/s update {res['update_items_per_s']:.0f}/s "
        f"delete {res['delete_items_per_s']:.0f}/s; search p50/p99 idle {idle['p50_ms']:.3f}/{idle['p99_ms']:.3f} "
        f"ms, during writes {busy['p50_ms']:.3f}/{busy['p99_ms']:.3f} ms",
        flush=True,
    )
    return res


def update_strategies(args: argparse.Namespace) -> dict[str, Any]:
    """Three ways to change 3,000 of 10k vectors on raw hnswlib (1 thread, batches of 8): in place (same
    label), delete + insert into the freed slot (``replace_deleted``, fresh label), delete + append."""
    import hnswlib

    n, dim, n_upd = 10_000, 384, 3000
    data = clustered(n + n_upd + 300, dim, seed=11, clusters=n // 50, noise=1.0)
    queries = data[n + n_upd :]
    out: dict[str, Any] = {"n": n, "updated": n_upd, "batch": 8, "m": args.m}
    rng = np.random.default_rng(3)
    upd = rng.choice(n, n_upd, replace=False)
    final = data[:n].copy()
    final[upd] = data[n : n + n_upd]
    truth = exact_topk(final, queries, K)
    for how in ("append_new_items", "in_place", "delete_then_replace", "delete_then_append"):
        g = hnswlib.Index(space="ip", dim=dim)
        g.init_index(max_elements=n + n_upd, M=args.m, ef_construction=args.ef_construction, allow_replace_deleted=True)
        g.add_items(data[:n], np.arange(n), num_threads=args.build_threads)
        labels = np.arange(n)
        t = time.perf_counter()
        for s in range(0, n_upd, 8):
            idx = upd[s : s + 8]
            new = data[n + s : n + s + len(idx)]
            fresh = np.arange(n + s, n + s + len(idx)) + 10 * n
            if how == "append_new_items":  # the reference: plain inserts of the same vectors
                g.add_items(new, fresh, num_threads=1)
                continue
            if how == "in_place":
                g.add_items(new, idx, num_threads=1)
                continue
            for lab in labels[idx]:
                g.mark_deleted(int(lab))
            g.add_items(new, fresh, num_threads=1, replace_deleted=how == "delete_then_replace")
            labels[idx] = fresh
        dt = time.perf_counter() - t
        row: dict[str, Any] = {"items_per_s": n_upd / dt, "element_count": g.get_current_count()}
        if how != "append_new_items":
            g.set_ef(args.ef)
            lab2row = {int(v): r for r, v in enumerate(labels)}
            found = [[lab2row[int(x)] for x in r] for r in g.knn_query(queries, k=K, num_threads=1)[0]]
            row["recall_at_10_after"] = recall(found, truth)
        out[how] = row
        print(
            f"update {how}: {row['items_per_s']:.0f}/s, recall@10 after {row.get('recall_at_10_after', '-')}, "
            f"graph {row['element_count']} slots",
            flush=True,
        )
    return out


def movielens(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray] | str:
    """The 1,682 ml-100k titles (+ year, genres) encoded by streamrec.encoders; queries are session-like
    means of two catalogue vectors."""
    path = ML100K_ITEMS if ML100K_ITEMS.exists() else Path(sys.prefix) / str(ML100K_ITEMS).split(".venv/", 1)[1]
    if not path.exists():
        return f"no MovieLens file at {ML100K_ITEMS}"
    try:
        from streamrec.encoders import OnnxEncoderConfig, OnnxTextEncoder

        enc = OnnxTextEncoder(MODEL_DIR, OnnxEncoderConfig(provider="cpu"))
    except Exception as e:  # the encoder may not be exported on this machine
        return f"encoder unavailable ({type(e).__name__}: {e})"
    lines = path.read_text(encoding="latin-1").splitlines()[1:]
    texts = []
    for line in lines:
        parts = line.split("\t")
        texts.append(f"{parts[1]} ({parts[2]}) | {parts[3]}" if len(parts) >= 4 else parts[1])
    t = time.perf_counter()
    vecs = np.asarray(enc.encode(texts), np.float32)
    print(f"encoded {len(texts)} MovieLens titles in {time.perf_counter() - t:.1f}s", flush=True)
    rng = np.random.default_rng(5)
    pairs = rng.integers(0, len(vecs), (args.queries, 2))
    q = vecs[pairs[:, 0]] + vecs[pairs[:, 1]]
    return vecs, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["datasets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, (name, d) in zip(axes[0], sets.items(), strict=True):
        for eng, style in (("hnswlib_streamrec", "o-"), ("hnswlib_raw", "s--"), ("faiss_hnsw", "^-")):
            if eng not in d["sweep"][0]:
                continue
            xs = [r[eng]["p50_ms"] for r in d["sweep"]]
            ys = [r[eng]["recall_at_10"] for r in d["sweep"]]
            ax.plot(xs, ys, style, label=eng)
            for r, x, y in zip(d["sweep"], xs, ys, strict=True):
                if eng == "hnswlib_streamrec":
                    ax.annotate(f"ef{r['ef']}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, -9))
        ex = d["exact_vs_default"]["exact_numpy"]
        ax.axvline(ex["p50_ms"], color="grey", ls=":", label=f"exact numpy p50 {ex['p50_ms']:.2f} ms")
        ax.set_xscale("log")
        ax.set_xlabel("single-query p50 latency, ms (log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{name} (n={d['n']:,}, M={result['params']['m']})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"streamrec item index: recall vs latency ({result['machine']['note'][:60]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k + MovieLens only, fewer queries")
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="synthetic sizes (default 10000 100000)")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=32, help="the default ef under test")
    p.add_argument("--ef-sweep", type=int, nargs="*", default=[10, 16, 24, 32, 48, 64, 96, 128])
    p.add_argument("--excl-ef", type=int, nargs="*", default=[32, 64])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--exact-queries", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5, help="interleaving blocks per measurement")
    p.add_argument("--upserts", type=int, default=2048)
    p.add_argument("--serve-s", type=float, default=2.0)
    p.add_argument("--contention-s", type=float, default=2.0)
    p.add_argument(
        "--switch-intervals",
        type=float,
        nargs="*",
        default=[0.0005],
        help="extra serving runs (chunk 1, slice 0) with sys.setswitchinterval(S) (default 0.0005)",
    )
    p.add_argument(
        "--write-slicing",
        type=float,
        nargs=2,
        action="append",
        metavar=("CHUNK", "SLICE_S"),
        help="write_chunk and write_slice_s pairs to compare (default: 1 0, 2 0.001, 4 0.002, 16 0.01)",
    )
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--no-movielens", action="store_true")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument("--note", default=None, help="what else ran on the machine (recorded in the JSON)")
    p.add_argument("--skip-update-strategies", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [10_000]
        args.queries, args.exact_queries, args.upserts, args.serve_s, args.contention_s = 300, 50, 512, 1.0, 1.0
        args.ef_sweep = [10, 16, 32, 64, 128]
    sizes = args.sizes or [10_000, 100_000]
    args.write_slicing = args.write_slicing or [(1, 0.0), (2, 0.001), (4, 0.002), (16, 0.01)]
    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "index",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.index_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(args.note or MACHINE_NOTE),
        "versions": versions(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
        "notes": [
            "1M items not in the default sizes: a bulk build takes ~20 min on a 2-core machine for hnswlib alone "
            "(plus faiss); run --sizes 1000000 for it.",
            "exclusions: 50 ids per query, either its own 50 nearest items (worst case) or 50 random ones; "
            "recall is against the exact top-10 of what remains.",
            "hnswlib_streamrec = the HnswIndex API (validation, lock, id mapping); hnswlib_raw = knn_query on the "
            "same graph.",
        ],
    }
    for n in sizes:
        data = clustered(n + args.queries, 384, seed=n, clusters=max(10, n // 50), noise=1.0)
        result["datasets"][f"synthetic-{n // 1000}k"] = bench_dataset(
            f"synthetic clustered 384-d, {n:,}", data[:n], data[n:], args
        )
    if not args.no_movielens:
        ml = movielens(args)
        if isinstance(ml, str):
            result["notes"].append(f"MovieLens titles skipped: {ml}")
            print(f"MovieLens skipped: {ml}")
        else:
            result["datasets"]["movielens-100k-titles"] = bench_dataset("MovieLens ml-100k titles (MiniLM)", *ml, args)
    if not args.skip_update_strategies:
        result["update_strategies_10k"] = update_strategies(args)
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["seconds"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"index_{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"index_{stamp}.png")
    print(f"\nwrote {args.out}/index_{stamp}.json and .png in {result['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
