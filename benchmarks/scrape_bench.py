"""Is /metrics answered while the worker is busy? Scrapes of a worker catching up a backlog, on the real broker.

    python -m benchmarks.scrape_bench --note "..."

Starts a worker with a 400-item catalogue, produces a backlog of ``--events`` events at once, and while the
worker works through it fires ``--waves`` waves of ``--concurrent`` simultaneous scrapes (timeout 5 s each);
then the same against the idle worker. Prints and writes ``scrape_<time>.{json,png}`` into ``--out`` (default
``~/.cache/streamrec/bench``): the success count and latency percentiles of each phase, with the machine, CPU
flags and load. The README cites ``benchmarks/results/scrape.{json,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.recovery_bench import DEFAULT_OUT, catalogue, events, machine, wait_metric
from streamrec.testing import produce, start_worker, unique_name


def scrape(url: str) -> float | None:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
    except OSError:
        return None
    return time.perf_counter() - t0


def waves(url: str, n_waves: int, concurrent: int) -> dict[str, Any]:
    lat: list[float | None] = []
    with ThreadPoolExecutor(concurrent) as pool:
        for _ in range(n_waves):
            lat += list(pool.map(lambda _: scrape(url), range(concurrent)))
    ok = sorted(x for x in lat if x is not None)

    def pct(q: float) -> float | None:
        return round(ok[min(len(ok) - 1, int(q * len(ok)))] * 1000, 1) if ok else None

    return {
        "scrapes": len(lat),
        "ok": len(ok),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(ok[-1] * 1000, 1) if ok else None,
    }


async def run(args: argparse.Namespace, model: Path, work: Path) -> dict[str, Any]:
    topics = {
        "app_id": unique_name("scr-app"),
        "events_topic": unique_name("scr-events"),
        "items_topic": unique_name("scr-items"),
        "recommendations_topic": unique_name("scr-recs"),
        "dead_letter_topic": unique_name("scr-dlq"),
    }
    env = {
        "STREAMREC_BOOTSTRAP": args.bootstrap,
        "STREAMREC_MODEL_DIR": str(model),
        "STREAMREC_DATA_DIR": str(work),
        "STREAMREC_PARTITIONS": "1",
        **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
    }
    worker = start_worker(env, work / "worker.log")
    try:
        await wait_metric(worker, lambda m: "streamrec_index_ready" in m)
        await produce(args.bootstrap, topics["items_topic"], catalogue(400))
        await wait_metric(worker, lambda m: m.get("streamrec_index_ready") == 1.0)
        await produce(args.bootstrap, topics["events_topic"], events(args.events, 400, 200))
        t0 = time.monotonic()
        busy = await asyncio.to_thread(waves, worker.metrics_url, args.waves, args.concurrent)
        busy["during_s"] = round(time.monotonic() - t0, 1)
        m = await asyncio.to_thread(worker.metrics)
        busy["answered_meanwhile"] = m.get("streamrec_pipeline_recommendations_total")
        await wait_metric(worker, lambda m: m.get("streamrec_pipeline_recommendations_total", 0) >= args.events)
        idle = await asyncio.to_thread(waves, worker.metrics_url, args.waves, args.concurrent)
        return {"busy": busy, "idle": idle}
    finally:
        worker.stop(timeout_s=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("STREAMREC_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--events", type=int, default=6000)
    p.add_argument("--concurrent", type=int, default=200)
    p.add_argument("--waves", type=int, default=3)
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON and PNG")
    args = p.parse_args()
    from streamrec.commands.export import default_model_dir

    info = machine(args.note)
    with tempfile.TemporaryDirectory(prefix="streamrec-scrape-") as tmp:
        result = asyncio.run(run(args, args.model_dir or default_model_dir(), Path(tmp)))
    info["loadavg_after"] = list(os.getloadavg())
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"scrape_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps({"machine": info, "params": {k: str(v) for k, v in vars(args).items()}, "result": result}, indent=2)
        + "\n"
    )
    plot(result, out.with_suffix(".png"), info)
    print(f"wrote {out} and {out.with_suffix('.png').name}")


def plot(result: dict[str, Any], path: Path, info: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(result)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(phases, [100 * result[p]["ok"] / result[p]["scrapes"] for p in phases], color="tab:green")
    left.set_ylabel("% of scrapes answered (5 s timeout)")
    left.set_ylim(0, 105)
    for q, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:orange"), ("max_ms", "tab:red")):
        right.plot(phases, [result[p][q] or 0 for p in phases], "o-", color=color, label=q)
    right.set_ylabel("scrape latency, ms")
    right.legend()
    fig.suptitle(f"/metrics: {info['note']} ({info['cpu']}, load {info['loadavg_before'][0]:.1f})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
