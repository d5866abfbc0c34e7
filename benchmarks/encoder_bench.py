"""Encoder benchmark: PyTorch fp32 vs ONNX Runtime fp32 vs INT8 variants, side by side in one run.

    python benchmarks/encoder_bench.py --quick          # ~2 min on 2 cores
    python benchmarks/encoder_bench.py                  # + research variants, more rounds

Needs an exported model (``streamrec export``; default: the user's cache) and the ``export`` extra (torch).
Same held-out texts for every engine (MovieLens titles, product-like and query-like text). Measurements are
interleaved round by round (engine A, B, C, A, B, C, ...) so a neighbour's load hits every engine alike; trust
the ratios more than the absolute times. Tokenization is included in every time.

Quality: cosine per text vs PyTorch fp32 (mean, min) and top-10 neighbour overlap among the texts.
Speed: batch-1 latency p50/p99; throughput at batch 8/32/128 (texts per second).
Research variants (built here from model_fp32.onnx): per-tensor vs per-channel weights, sensitive MatMuls
kept in float, SmoothQuant-style outlier migration, static QDQ; the Pareto front (speed vs cosine) is reported.

Writes encoder_<timestamp>.json and .png into the output folder
(`--out`; default `~/.cache/streamrec/bench`, outside git: the committed reference runs in
`benchmarks/results/` are chosen by hand, see benchmarks/README.md). The JSON's machine block names the CPU,
its family/model and ISA flags (streamrec.machine): dynamic INT8 numbers depend on them (VNNI or not).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.machine import machine

Encode = Callable[[Sequence[str]], npt.NDArray[np.float32]]
DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"  # outside git


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("onnxruntime-gpu", "onnx", "torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def research_variants(model_dir: Path, work: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """Build extra INT8 graphs from model_fp32.onnx into ``work``; return variant name -> recipe dict."""
    from streamrec.encoders import load_manifest
    from streamrec.export.corpus import build_corpus
    from streamrec.export.quantize import (
        FFN_OUTPUTS,
        DynamicInt8Recipe,
        StaticQdqRecipe,
        ffn_output_pattern,
        quantize_dynamic_int8,
        quantize_static_qdq,
        text_feeds,
    )

    manifest = load_manifest(model_dir)
    fp32 = model_dir / manifest.variants["fp32"].file
    calib = list(build_corpus(200).calibration)
    feeds = text_feeds(
        model_dir / manifest.tokenizer, calib[:128], manifest.inputs, manifest.max_seq_length, 16, same_width=False
    )
    recipes: dict[str, DynamicInt8Recipe | StaticQdqRecipe] = {
        "int8-per-tensor": DynamicInt8Recipe(per_channel=False),
        "int8-per-channel": DynamicInt8Recipe(),
        "int8-pc-L0ffnout-fp32": DynamicInt8Recipe(keep_float=ffn_output_pattern([0])),
        "int8-pc-ffnout-fp32": DynamicInt8Recipe(keep_float=(FFN_OUTPUTS,)),
        "int8-smooth0.7-L0ffnout-fp32": DynamicInt8Recipe(smooth_alpha=0.7, keep_float=ffn_output_pattern([0])),
        "int8-split2": DynamicInt8Recipe(outlier_channels=2),
        "int8-split4": DynamicInt8Recipe(outlier_channels=4),
        "int8-smooth0.7": DynamicInt8Recipe(smooth_alpha=0.7),  # the default before reduce_range (wrong on AVX2)
        "int8-pc-reduce-range": DynamicInt8Recipe(reduce_range=True),
    }
    if not quick:
        recipes |= {
            "int8-smooth0.5": DynamicInt8Recipe(smooth_alpha=0.5),
            "int8-smooth0.85": DynamicInt8Recipe(smooth_alpha=0.85),
            "qdq-static-minmax-all": StaticQdqRecipe(),
            "qdq-static-smooth0.7-ffnout-fp32": StaticQdqRecipe(keep_float=(FFN_OUTPUTS,), smooth_alpha=0.7),
        }
    out: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes.items():
        dst = work / f"{name}.onnx"
        print(f"  building {name}", flush=True)
        if isinstance(recipe, DynamicInt8Recipe):
            quantize_dynamic_int8(fp32, dst, recipe, calibration_feeds=feeds)
        else:
            quantize_static_qdq(
                fp32,
                dst,
                recipe,
                tokenizer_file=model_dir / manifest.tokenizer,
                calibration_texts=calib,
                inputs=manifest.inputs,
                max_seq_length=manifest.max_seq_length,
            )
        out[name] = recipe.to_dict()
    return out


def make_research_dir(model_dir: Path, work: Path, recipes: dict[str, dict[str, Any]]) -> None:
    """A model directory (manifest without hashes checked) holding the research graphs."""
    from streamrec.encoders import Variant, load_manifest
    from streamrec.encoders.manifest import CPU

    m = load_manifest(model_dir)
    check_file = str(m.self_check["file"])
    for name in (m.tokenizer, check_file):
        shutil.copy2(model_dir / name, work / name)
    variants = {n: Variant(n, f"{n}.onnx", CPU, "int8", r) for n, r in recipes.items()}
    files = {m.tokenizer: "unchecked", check_file: "unchecked", **{v.file: "unchecked" for v in variants.values()}}
    dataclasses.replace(m, variants=variants, files=files, default_variant={}).write(work)


def neighbours(e: npt.NDArray[np.float32], k: int = 10) -> npt.NDArray[np.intp]:
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    return np.argpartition(-s, k, axis=1)[:, :k]


def quality(e: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]) -> dict[str, float]:
    cos = np.sum(e.astype(np.float64) * ref, axis=1)
    a, b = neighbours(e), neighbours(ref)
    overlap = float(np.mean([len(set(x.tolist()) & set(y.tolist())) / 10 for x, y in zip(a, b, strict=True)]))
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "top10_overlap": overlap}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    p.add_argument("--model-dir", type=Path, default=cache / "streamrec" / "models" / "all-MiniLM-L6-v2")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ORT alike")
    p.add_argument("--quick", action="store_true", help="fewer texts/rounds and research variants")
    p.add_argument("--no-research", action="store_true", help="only the exported variants")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument(
        "--note",
        default="shared 2-core machine; other jobs ran CPU-heavy work at the same time",
        help="what else ran on the machine (recorded in the JSON)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from streamrec.encoders import OnnxEncoderConfig, OnnxTextEncoder, load_manifest
    from streamrec.export.corpus import build_corpus
    from streamrec.export.reference import TorchReferenceEncoder
    from streamrec.export.testing import ensure_exported_model

    torch.set_num_threads(args.threads)
    model_dir = ensure_exported_model(args.model_dir)
    manifest = load_manifest(model_dir)
    source = Path(manifest.source["path"])
    rounds = 3 if args.quick else 5
    n_quality = 300 if args.quick else 600
    n_latency = 30 if args.quick else 60  # per round
    n_tput = 128 if args.quick else 256  # texts per batch size per round
    texts = list(build_corpus(n_quality // 3 + 1).validation)[:n_quality]
    load_before = os.getloadavg()

    engines: dict[str, Encode] = {}
    info: dict[str, dict[str, Any]] = {}
    # like sentence-transformers' encode(): one padded batch per call of up to 128 texts
    ref_enc = TorchReferenceEncoder(
        source,
        model_dir / manifest.tokenizer,
        pooling=manifest.pooling,
        max_seq_length=manifest.max_seq_length,
        batch_size=128,
    )
    engines["pytorch-fp32"] = ref_enc.encode
    info["pytorch-fp32"] = {"engine": "torch", "recipe": {"kind": "fp32"}}
    # ORT engines run as the runtime does (length-sorted chunks of OnnxEncoderConfig's default size); the
    # "/pad-like-torch" rows pad each call's texts into one batch, as the PyTorch reference does.
    # self_check off: this benchmark scores every graph itself, and must time the graph it names
    cfg: dict[str, Any] = {"provider": "cpu", "intra_op_threads": args.threads, "self_check": "off"}
    for name in ("fp32", "cpu-int8", "tensorrt-int8"):
        if name in manifest.variants:
            enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(variant=name, **cfg))
            engines[f"ort-{name}"] = enc.encode
            info[f"ort-{name}"] = {
                "engine": "onnxruntime CPU",
                "recipe": dict(manifest.variants[name].recipe),
                "chunk": enc.max_batch_size,
                "default": name == manifest.default_variant.get("CPUExecutionProvider"),
            }
    for name in ("fp32", "cpu-int8"):
        enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(variant=name, max_batch_size=128, **cfg))
        engines[f"ort-{name}/pad-like-torch"] = enc.encode
        info[f"ort-{name}/pad-like-torch"] = {
            "engine": "onnxruntime CPU",
            "chunk": 128,
            "recipe": dict(manifest.variants[name].recipe),
        }
    tmp = Path(tempfile.mkdtemp(prefix="encoder-bench-"))
    try:
        if not args.no_research:
            print("building research variants ...", flush=True)
            recipes = research_variants(model_dir, tmp, args.quick)
            make_research_dir(model_dir, tmp, recipes)
            for name, recipe in recipes.items():
                enc = OnnxTextEncoder(tmp, OnnxEncoderConfig(variant=name, verify=False, **cfg))
                engines[f"ort-{name}"] = enc.encode
                info[f"ort-{name}"] = {"engine": "onnxruntime CPU", "recipe": recipe}

        print(f"quality on {len(texts)} held-out texts ...", flush=True)
        ref = ref_enc.encode(texts)
        for name, fn in engines.items():
            info[name]["quality"] = quality(fn(texts), ref)
            for t in texts[:10]:
                fn([t])  # warm-up

        print(f"batch-1 latency, {rounds} interleaved rounds ...", flush=True)
        lat: dict[str, list[float]] = {n: [] for n in engines}
        for r in range(rounds):
            chunk = texts[r * n_latency % len(texts) :][:n_latency]
            for name, fn in engines.items():
                for t in chunk:
                    t0 = time.perf_counter()
                    fn([t])
                    lat[name].append(time.perf_counter() - t0)
        for name in engines:
            ms = np.array(lat[name]) * 1e3
            info[name]["batch1_ms"] = {
                "p50": float(np.percentile(ms, 50)),
                "p99": float(np.percentile(ms, 99)),
                "n": len(ms),
            }

        for bs in (8, 32, 128):
            print(f"throughput at batch {bs} ...", flush=True)
            per_round: dict[str, list[float]] = {n: [] for n in engines}
            for r in range(rounds):
                chunk = texts[r * n_tput % len(texts) :][:n_tput]
                for name, fn in engines.items():
                    t0 = time.perf_counter()
                    for i in range(0, len(chunk), bs):
                        fn(chunk[i : i + bs])
                    per_round[name].append(len(chunk) / (time.perf_counter() - t0))
            for name in engines:
                info[name][f"throughput_b{bs}"] = statistics.median(per_round[name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = info["pytorch-fp32"]
    for d in info.values():
        d["speedup_batch1_p50"] = base["batch1_ms"]["p50"] / d["batch1_ms"]["p50"]
        for bs in (8, 32, 128):
            d[f"speedup_b{bs}"] = d[f"throughput_b{bs}"] / base[f"throughput_b{bs}"]
    front = pareto(info)
    targets = {"batch1_speedup": 5.0, "b32_speedup": 3.0, "cos_mean": 0.995, "top10_overlap": 0.90}
    for d in info.values():
        q = d["quality"]
        d["meets_targets"] = bool(
            d["speedup_batch1_p50"] >= 5
            and d["speedup_b32"] >= 3
            and q["cos_mean"] >= 0.995
            and q["top10_overlap"] >= 0.90
        )
    machine_info = {**machine(args.note), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    result = {
        "benchmark": "encoder",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/encoder_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info,
        "versions": versions(),
        "params": {
            "threads": args.threads,
            "rounds": rounds,
            "quality_texts": len(texts),
            "latency_texts_per_round": n_latency,
            "throughput_texts_per_round": n_tput,
            "model_dir": str(model_dir),
            "model": manifest.name,
            "max_seq_length": manifest.max_seq_length,
        },
        "targets_vs_pytorch_fp32": targets,
        "pareto_front_b32_vs_cos_mean": front,
        "results": info,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"encoder_{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(info, front, args.out / f"encoder_{stamp}.png", machine_info, args.threads)
    print_table(info, front)
    print(f"wrote {args.out}/encoder_{stamp}.json and .png")
    return 0


def pareto(info: dict[str, dict[str, Any]]) -> list[str]:
    """Engines no other engine beats on both batch-32 throughput and cosine mean."""
    names = [n for n in info if "/pad-like-torch" not in n]
    front = []
    for a in names:
        qa, sa = info[a]["quality"]["cos_mean"], info[a]["throughput_b32"]
        if not any(
            info[b]["quality"]["cos_mean"] >= qa
            and info[b]["throughput_b32"] >= sa
            and (info[b]["quality"]["cos_mean"] > qa or info[b]["throughput_b32"] > sa)
            for b in names
        ):
            front.append(a)
    return sorted(front, key=lambda n: info[n]["throughput_b32"])


def print_table(info: dict[str, dict[str, Any]], front: list[str]) -> None:
    hdr = (
        f"{'engine':36s} {'p50 ms':>7s} {'p99 ms':>7s} {'x b1':>5s} {'b8/s':>6s} {'b32/s':>6s} {'x b32':>5s} "
        f"{'b128/s':>6s} {'cos':>7s} {'cosmin':>7s} {'top10':>6s}"
    )
    print(hdr)
    for name, d in info.items():
        q = d["quality"]
        mark = ("*" if name in front else " ") + ("T" if d["meets_targets"] else " ")
        print(
            f"{name:34s}{mark} {d['batch1_ms']['p50']:7.2f} {d['batch1_ms']['p99']:7.2f} "
            f"{d['speedup_batch1_p50']:5.1f} {d['throughput_b8']:6.0f} {d['throughput_b32']:6.0f} "
            f"{d['speedup_b32']:5.2f} {d['throughput_b128']:6.0f} {q['cos_mean']:7.4f} {q['cos_min']:7.4f} "
            f"{q['top10_overlap']:6.3f}"
        )
    print("* Pareto front (batch-32 throughput vs cosine mean); T meets every target vs PyTorch fp32")


def plot(info: dict[str, dict[str, Any]], front: list[str], path: Path, machine: dict[str, Any], threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(info)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    y = np.arange(len(names))
    axes[0].barh(y, [info[n]["batch1_ms"]["p50"] for n in names], color="tab:blue", label="p50")
    axes[0].scatter([info[n]["batch1_ms"]["p99"] for n in names], y, color="tab:red", marker="|", s=200, label="p99")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("batch-1 latency (ms, tokenization included)")
    axes[0].legend()
    width = 0.27
    for i, bs in enumerate((8, 32, 128)):
        axes[1].barh(
            y + (i - 1) * width, [info[n][f"throughput_b{bs}"] for n in names], height=width, label=f"batch {bs}"
        )
    axes[1].set_yticks(y, [""] * len(names))
    axes[1].invert_yaxis()
    axes[1].set_xlabel("throughput (texts/s)")
    axes[1].legend()
    ax = axes[2]
    for n in names:
        d = info[n]
        ax.scatter(d["speedup_b32"], d["quality"]["cos_mean"], color="tab:green" if n in front else "tab:gray")
        ax.annotate(n.removeprefix("ort-"), (d["speedup_b32"], d["quality"]["cos_mean"]), fontsize=7)
    fr = [info[n] for n in front]
    ax.plot([d["speedup_b32"] for d in fr], [d["quality"]["cos_mean"] for d in fr], color="tab:green", lw=1)
    ax.axhline(0.995, color="tab:red", ls="--", lw=0.8)
    ax.axvline(3.0, color="tab:red", ls="--", lw=0.8)
    ax.set_xlabel("batch-32 throughput vs PyTorch fp32 (x)")
    ax.set_ylabel("cosine mean vs PyTorch fp32")
    ax.set_ylim(max(0.95, min(info[n]["quality"]["cos_mean"] for n in names) - 0.002), 1.0005)
    ax.set_title("Pareto front (green); targets dashed")
    fig.suptitle(
        f"all-MiniLM-L6-v2 encoder, {threads} thread(s), {machine['cpu']} ({machine['cores']} cores, "
        f"shared; {' '.join(machine['cpu_flags'])}; int8 dot {machine['int8_dot']}), "
        f"load {machine['loadavg_before'][0]:.2f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
