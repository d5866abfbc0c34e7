"""The evaluation's outputs: the paired comparisons, the JSON document, the console table and the PNG."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.streams.evaluation.offline import SystemResult
from streamrec.streams.evaluation.scoring import METRICS, bootstrap_mean, paired_bootstrap

__all__ = ["compare", "finite", "goals", "machine", "plot", "slug", "system_intervals", "table", "versions"]

_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "sse4_2")


def machine() -> dict[str, Any]:
    """CPU model, cores, the instruction-set flags that change numerics or speed, and the load average."""
    cpu, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    present = set(flags.split())
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": [f for f in _FLAGS if f in present],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("streamrec", "numpy", "hnswlib", "onnxruntime-gpu", "onnxruntime", "faust-streaming", "aiokafka"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def system_intervals(results: Sequence[SystemResult], *, rounds: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """Each system's own 95 % interval per metric (users resampled)."""
    return {
        r.name: {
            m: [round(x, 6) for x in bootstrap_mean(r.scores.metric(m), r.scores.users, rounds=rounds, seed=seed)]
            for m in METRICS
        }
        for r in results
    }


def compare(
    reference: SystemResult, others: Sequence[SystemResult], *, rounds: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """``reference`` against each of ``others`` on the same points: paired bootstrap over users, per metric."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for other in others:
        if other.scores.users != reference.scores.users:
            raise ValueError(f"{reference.name} and {other.name} were not scored on the same points")
        out[other.name] = {
            m: paired_bootstrap(
                reference.scores.metric(m), other.scores.metric(m), reference.scores.users, rounds=rounds, seed=seed
            ).as_dict()
            for m in METRICS
        }
    return out


def goals(
    reference: SystemResult, baselines: Sequence[SystemResult], comparisons: dict[str, dict[str, dict[str, float]]]
) -> dict[str, Any]:
    """The issue's quality goals: HR@10 >= 2x plain popularity and >= 1.1x the best baseline."""
    if not baselines:
        return {}
    best = max(baselines, key=lambda b: b.scores.means()["hr"])
    out: dict[str, Any] = {"best_baseline": best.name}
    targets = [("vs_popularity", "popularity", 2.0), ("vs_best_baseline", best.name, 1.1)]
    for key, name, target in targets:
        c = comparisons.get(name, {}).get("hr")
        if c is None:
            continue
        out[key] = {
            "baseline": name,
            "target_ratio": target,
            "ratio": c["ratio"],
            "ratio_interval": [c["ratio_lo"], c["ratio_hi"]],
            "met": c["ratio"] >= target,
            "met_with_interval": c["ratio_lo"] >= target,
        }
    return out


def table(
    results: Sequence[SystemResult], reference: str | None, comparisons: dict[str, dict[str, dict[str, float]]]
) -> str:
    head = (
        f"{'system':<34} {'HR@10':>7} {'MRR@10':>7} {'NDCG@10':>8} {'cover':>6} {'us/ev':>7}  "
        f"{'HR ratio ' + (reference or '') + ' / this [95% CI]':<30}"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: -r.scores.means()["hr"]):
        m = r.scores.means()
        c = comparisons.get(r.name, {}).get("hr")
        ratio = f"{c['ratio']:.2f}x [{c['ratio_lo']:.2f}, {c['ratio_hi']:.2f}]" if c else ""
        cost = f"{r.cpu_s / max(1, r.events) * 1e6:>7.0f}" if r.kind != "kafka" else f"{'(worker)':>7}"
        lines.append(
            f"{r.name:<34} {m['hr']:>7.4f} {m['mrr']:>7.4f} {m['ndcg']:>8.4f} {r.coverage:>6.3f} {cost}  {ratio}"
        )
    return "\n".join(lines)


def finite(doc: Any) -> Any:
    """``doc`` with every non-finite float replaced by None (JSON has no infinity; a ratio over 0 is one)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: finite(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [finite(v) for v in doc]
    return doc


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "log"


def plot(doc: dict[str, Any], path: Path) -> None:
    """Left: HR@10 of every system with its interval. Right: the reference's HR@10 ratio to each other system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = sorted(doc["systems"], key=lambda s: s["metrics"]["hr"])
    intervals = doc["intervals"]
    colours = {"strategy": "tab:blue", "baseline": "tab:gray", "kafka": "tab:green"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(systems) + 2.2))
    ys = range(len(systems))
    hr = [s["metrics"]["hr"] for s in systems]
    err = [
        [h - intervals[s["name"]]["hr"][0] for s, h in zip(systems, hr, strict=True)],
        [intervals[s["name"]]["hr"][1] - h for s, h in zip(systems, hr, strict=True)],
    ]
    left.barh(list(ys), hr, xerr=err, color=[colours.get(s["kind"], "tab:gray") for s in systems], capsize=3)
    left.set_yticks(list(ys), [s["name"] for s in systems], fontsize=8)
    left.set_xlabel("HR@10 (next item), 95% interval over users")
    left.grid(axis="x", alpha=0.3)
    ref = doc.get("reference")
    comps = doc.get("comparisons", {})
    others = [s for s in systems if s["name"] in comps]
    if ref and others:
        ratios = [comps[s["name"]]["hr"]["ratio"] for s in others]
        rerr = [
            [r - comps[s["name"]]["hr"]["ratio_lo"] for s, r in zip(others, ratios, strict=True)],
            [comps[s["name"]]["hr"]["ratio_hi"] - r for s, r in zip(others, ratios, strict=True)],
        ]
        finite = [(i, r) for i, r in enumerate(ratios) if math.isfinite(r)]
        right.barh(
            [i for i, _ in finite],
            [r for _, r in finite],
            xerr=[[rerr[0][i] for i, _ in finite], [rerr[1][i] for i, _ in finite]],
            color=[colours.get(others[i]["kind"], "tab:gray") for i, _ in finite],
            capsize=3,
        )
        right.set_yticks(range(len(others)), [s["name"] for s in others], fontsize=8)
        for x, style in ((1.0, "-"), (1.1, "--"), (2.0, ":")):
            right.axvline(x, color="black", linestyle=style, linewidth=0.8)
        right.set_xlabel(f"HR@10 ratio, {ref} / each (paired bootstrap over users)\nlines at 1, 1.1 and 2")
        right.grid(axis="x", alpha=0.3)
    else:
        right.axis("off")
    m = doc["machine"]
    fig.suptitle(
        f"streamrec evaluate: {doc['log']['description']}\n{doc['points']:,} points, K={doc['k']}; "
        f"{m['cpu']} ({', '.join(m['cpu_flags'])}); {doc['started']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
