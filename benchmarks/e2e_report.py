"""Machine facts, the JSON file, the PNG plots and the printed table of the end-to-end benchmark."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e_load import StepResult


def machine(note: str) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "loadavg_before": list(os.getloadavg()), "note": note}


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
    return (f"p50 {lat['p50']:7.1f}  p99 {lat['p99']:7.1f}  max {lat['max']:7.1f} ms  "
            f"achieved {s.achieved_rate:6.0f}/s  missing {s.missing}  gen-lag p99 {s.generator_lag_ms['p99']:.1f} ms")


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
    head = ("| run | offered /s | p50 | p95 | p99 | p99.9 | max (ms) | achieved /s | p50 / floor | p99 / floor |"
            "\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [head]

    def row(name: str, s: dict[str, Any]) -> str:
        lat = s["latency_ms"]
        if not lat:
            return f"| {name} | {s['offered_rate']:.0f} | no answers | | | | | 0 | | |"
        r = s.get("ratio_to_floor", {})
        ratio = (f"{r['p50']:.1f}x | {r['p99']:.1f}x" if r else " | ")
        sat = " (saturated)" if s["saturated"] else ""
        return (f"| {name} | {s['offered_rate']:.0f} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | "
                f"{lat['p99.9']:.1f} | {lat['max']:.1f} | {s['achieved_rate']:.0f}{sat} | {ratio} |")

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
                stages.append(f"  {name} @{s['offered_rate']:.0f}/s median ms: {st}")
    return "\n".join(rows) + "\n\nstage breakdown (worker's latency_ms; outside_stages = e2e - stages):\n" + \
        "\n".join(stages)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series = [("floor (bare aiokafka echo)", result["floor"]["steps"], "k")]
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])
    series += [(f"{k.replace('workers_', '')} worker(s)", v["steps"], next(colours))
               for k, v in result["sweeps"].items()]
    if result.get("search_heavy"):
        series.append(("search-heavy, 1 worker", result["search_heavy"]["steps"], "tab:red"))
    for label, steps, colour in series:
        steps = [s for s in steps if s["latency_ms"]]
        if not steps:
            continue
        x = [s["offered_rate"] for s in steps]
        for q, style in (("p50", "-o"), ("p99", "--^")):
            ax1.plot(x, [s["latency_ms"][q] for s in steps], style, color=colour, label=f"{label} {q}", ms=4)
    ax1.set(xscale="log", yscale="log", xlabel="offered events/s (open loop)", ylabel="latency, ms",
            title="end-to-end latency vs offered rate")
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
    fig.suptitle(f"streamrec end to end through Kafka - {m['cpu']}, {m['cores']} cores (shared), "
                 f"load avg {m['loadavg_before'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _closest(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    ok = [s for s in steps if s["latency_ms"]]
    return min(ok, key=lambda s: abs(math.log(s["offered_rate"] / rate))) if ok else None


def write(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    written = []
    for name in (f"e2e_{stamp}", "e2e_latest"):
        j = out / f"{name}.json"
        j.write_text(json.dumps(result, indent=1, allow_nan=False, default=_finite) + "\n")
        png = out / f"{name}.png"
        plot(result, png)
        written += [j, png]
    return written


def _finite(x: Any) -> Any:
    raise TypeError(f"not JSON: {x!r}")
