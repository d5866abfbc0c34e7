"""Machine facts, the JSON file, the PNG plots and the printed table of the end-to-end benchmark."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e_load import StepResult


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("streamrec", "aiokafka", "faust-streaming", "onnxruntime-gpu", "onnxruntime", "hnswlib", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    from streamrec.localkafka import KAFKA_VERSION

    out["apache-kafka (local broker default)"] = KAFKA_VERSION
    return out


def brief(s: StepResult) -> str:
    lat = s.latency_ms
    if not lat:
        return f"no answers ({s.missing} missing)"
    return (
        f"p50 {lat['p50']:7.1f}  p99 {lat['p99']:7.1f}  max {lat['max']:7.1f} ms  "
        f"achieved {s.achieved_rate:6.0f}/s  missing {s.missing}  gen-lag p99 {s.generator_lag_ms['p99']:.1f} ms"
    )


def merged_floor(sweeps: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One floor step per rate: from the first sweep that measured it (``phase`` says which)."""
    by_rate: dict[float, dict[str, Any]] = {}
    for name, ph in sweeps.items():
        for f in ph["floor_steps"]:
            by_rate.setdefault(f["offered_rate"], {**f, "phase": name})
    return [by_rate[r] for r in sorted(by_rate)]


def add_floor_ratios(phase: dict[str, Any], floor_steps: list[dict[str, Any]]) -> None:
    by_rate = {f["offered_rate"]: f for f in floor_steps}
    for s in phase["steps"]:
        f = by_rate.get(s["offered_rate"])
        if f and f["latency_ms"] and s["latency_ms"]:
            s["ratio_to_floor"] = {k: s["latency_ms"][k] / f["latency_ms"][k] for k in ("p50", "p95", "p99")}


def _phases(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(k, v) for k, v in result.get("sweeps", {}).items()]
    out += [(k, result[k]) for k in ("search_heavy", "synthetic") if result.get(k)]
    out += [(f"grid b{g['batch_max']} l{g['batch_linger_ms']:g}", g) for g in result.get("batch_grid", [])]
    return out


def complete(result: dict[str, Any]) -> bool:
    """Every phase produced figures (a step with answers) and the floor was measured."""
    ok = bool(result["floor"]["steps"]) and all(s["latency_ms"] for s in result["floor"]["steps"])
    return ok and all(ph["steps"] and ph["steps"][0]["latency_ms"] for _, ph in _phases(result))


def table(result: dict[str, Any]) -> str:
    head = (
        "| run | offered /s | p50 | p95 | p99 | p99.9 | max (ms) | achieved /s | p50 / floor | p99 / floor |"
        "\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = [head]

    def row(name: str, s: dict[str, Any]) -> str:
        lat = s["latency_ms"]
        if not lat:
            return f"| {name} | {s['offered_rate']:.0f} | no answers | | | | | 0 | | |"
        r = s.get("ratio_to_floor", {})
        ratio = f"{r['p50']:.1f}x | {r['p99']:.1f}x" if r else " | "
        sat = " (saturated)" if s["saturated"] else ""
        return (
            f"| {name} | {s['offered_rate']:.0f} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | "
            f"{lat['p99.9']:.1f} | {lat['max']:.1f} | {s['achieved_rate']:.0f}{sat} | {ratio} |"
        )

    for s in result["floor"]["steps"]:
        rows.append(row("floor (bare echo)", s))
    for name, ph in _phases(result):
        for s in ph["steps"]:
            rows.append(row(name, s))
    stages = []
    for name, ph in _phases(result):
        for s in ph["steps"]:
            if s["stages_ms"]:
                st = ", ".join(f"{k} {v['p50']:.2f}" for k, v in s["stages_ms"].items())
                if "cpu" in s:
                    st += (
                        f"; worker CPU {s['cpu']['server_cpu_ms_per_event']:.2f} ms/event "
                        f"({s['cpu']['server_cores_busy']:.2f} cores busy)"
                    )
                    if s["cpu"].get("children"):
                        st += f", of which its owner process {s['cpu']['children_cpu_ms_per_event']:.2f}"
                stages.append(f"  {name} @{s['offered_rate']:.0f}/s median ms: {st}")
                tl = s.get("timeline") or {}
                if tl.get("max_ms"):  # the worst buckets of send time: periodic spikes show as evenly spaced times
                    worst = sorted(zip(tl["max_ms"], tl["t_s"], strict=True), reverse=True)[:5]
                    stages.append(
                        f"    worst {tl['bucket_ms']:.0f} ms buckets (max ms @ s into the window): "
                        + ", ".join(f"{m:.0f} @{t:.2f}" for m, t in worst)
                    )
    for f in result["floor"]["steps"]:
        if "cpu" in f:
            stages.append(
                f"  floor @{f['offered_rate']:.0f}/s: echo CPU {f['cpu']['server_cpu_ms_per_event']:.3f} "
                f"ms/event; generator+consumer {f['cpu']['generator_cpu_ms_per_event']:.3f} ms/event"
            )
    return (
        "\n".join(rows)
        + "\n\nstage breakdown (worker's latency_ms; outside_stages = e2e - stages):\n"
        + "\n".join(stages)
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series = [("floor (bare aiokafka echo)", result["floor"]["steps"], "k")]
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])
    series += [
        (f"{k.replace('workers_', '')} worker(s)", v["steps"], next(colours)) for k, v in result["sweeps"].items()
    ]
    if result.get("search_heavy"):
        series.append(("search-heavy, 1 worker", result["search_heavy"]["steps"], "tab:red"))
    if result.get("synthetic"):
        n = result["synthetic"]["catalogue"]["items"]
        series.append((f"synthetic {n} items, 1 worker", result["synthetic"]["steps"], "tab:purple"))
    for label, steps, colour in series:
        steps = [s for s in steps if s["latency_ms"]]
        if not steps:
            continue
        x = [s["offered_rate"] for s in steps]
        for q, style in (("p50", "-o"), ("p99", "--^")):
            ax1.plot(x, [s["latency_ms"][q] for s in steps], style, color=colour, label=f"{label} {q}", ms=4)
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="offered events/s (open loop)",
        ylabel="latency, ms",
        title="end-to-end latency vs offered rate",
    )
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    rate = result.get("cdf_rate", 500.0)
    for label, steps, colour in series:
        s = _closest(steps, rate)
        if s is not None and "quantiles_ms" in s:
            qs = s["quantiles_ms"]
            ax2.plot(qs["ms"], [q / 100 for q in qs["q"]], color=colour, label=f"{label} @{s['offered_rate']:.0f}/s")
    ax2.set(xscale="log", xlabel="latency, ms", ylabel="fraction of events", title=f"latency CDF near {rate:.0f}/s")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(
        f"streamrec end to end through Kafka - {m['cpu']}, {m['cores']} cores (shared), "
        f"load avg {m['loadavg_before'][0]:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _closest(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    ok = [s for s in steps if s["latency_ms"]]
    return min(ok, key=lambda s: abs(math.log(s["offered_rate"] / rate))) if ok else None


def _sustained(steps: list[dict[str, Any]], p99_max_ms: float) -> float:
    """Highest offered rate answered in full (>= 90 %) with p99 <= ``p99_max_ms`` (0 if none)."""
    ok = [
        s["offered_rate"]
        for s in steps
        if not s["saturated"] and s["latency_ms"] and s["latency_ms"]["p99"] <= p99_max_ms
    ]
    return max(ok, default=0.0)


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals (2-core machine, one worker, MovieLens): what this run reached."""
    one = result.get("sweeps", {}).get("workers_1", {}).get("steps", [])
    two = result.get("sweeps", {}).get("workers_2", {}).get("steps", [])
    at500 = next((s for s in one if s["offered_rate"] == 500.0 and s["latency_ms"]), None)
    out: dict[str, Any] = {
        "p99_at_500_ms (goal <= 25)": at500["latency_ms"]["p99"] if at500 else None,
        "p50_over_floor_at_500 (goal <= 3)": at500.get("ratio_to_floor", {}).get("p50") if at500 else None,
        "one_worker_sustained_rate_p99_le_100ms (goal >= 1500)": _sustained(one, 100.0),
        "one_worker_sustained_rate": _sustained(one, 1000.0),
    }
    if two:
        r1, r2 = _sustained(one, 1000.0), _sustained(two, 1000.0)
        out["two_workers_sustained_rate"] = r2
        out["two_over_one (goal >= 1.7 where cores allow)"] = r2 / r1 if r1 else None
    return out


def compact(x: Any) -> Any:
    """Floats to 3 decimals, so the committed JSON stays small."""
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [compact(v) for v in x]
    return x


def write(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    written = []
    j = out / f"e2e_{stamp}.json"
    j.write_text(json.dumps(compact(result), indent=1, allow_nan=False, default=_finite) + "\n")
    png = out / f"e2e_{stamp}.png"
    plot(result, png)
    written += [j, png]
    return written


def _finite(x: Any) -> Any:
    raise TypeError(f"not JSON: {x!r}")
