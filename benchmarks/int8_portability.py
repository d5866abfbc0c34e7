"""Does a CPU INT8 recipe give the same quality on every x86 CPU? Scores recipes vs PyTorch fp32 per CPU.

    python benchmarks/int8_portability.py build --model-dir DIR --work W     # native: needs torch
    python benchmarks/int8_portability.py score --work W                      # onnxruntime only
    qemu-x86_64 -cpu Haswell $(which python) benchmarks/int8_portability.py score --work W --texts 300

``build`` writes into ``W``: the fp32 graph and tokenizer of an exported model, one INT8 graph per recipe (from
that fp32 graph, calibrated as the export does), the validation texts and their PyTorch fp32 embeddings.
``score`` embeds the texts with every graph on the CPU provider, in length-sorted chunks of 8 as the runtime
does, and writes ``int8_portability_<cpu>_<timestamp>.json`` into ``--out`` (default ``~/.cache/streamrec/bench``,
outside git; the committed reference runs are ``benchmarks/results/int8_portability_{vnni,haswell_qemu}.json``).

Why: onnxruntime's u8 x s8 MatMul kernels use ``vpdpbusd`` on CPUs with VNNI and ``vpmaddubsw`` (16-bit
saturating pair sums) on AVX2 CPUs without it, so a graph validated on one machine can be wrong on another.
Under ``qemu-x86_64 -cpu Haswell`` (qemu >= 7.2: AVX2 in TCG) CPUID reports AVX2 without AVX-512, and
onnxruntime picks its AVX2 kernels; ``/proc/cpuinfo`` is still the host's, so pass ``--cpu-label``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.machine import machine

DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"  # outside git
RECIPES: dict[str, dict[str, Any]] = {
    "smooth0.7-per-channel (pre-fix default)": {"per_channel": True, "smooth_alpha": 0.7},
    "smooth0.7-per-channel-reduce-range (default)": {"per_channel": True, "smooth_alpha": 0.7, "reduce_range": True},
    "per-channel-reduce-range": {"per_channel": True, "reduce_range": True},
}


def _file(name: str) -> str:
    return "int8_" + "".join(c if c.isalnum() else "_" for c in name.split(" ")[0]) + ".onnx"


def build(model_dir: Path, work: Path, n_texts: int) -> None:
    from streamrec.encoders import load_manifest
    from streamrec.export.corpus import build_corpus
    from streamrec.export.quantize import DynamicInt8Recipe, quantize_dynamic_int8, text_feeds
    from streamrec.export.reference import TorchReferenceEncoder

    m = load_manifest(model_dir)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = model_dir / m.variants["fp32"].file
    shutil.copy2(fp32, work / "fp32.onnx")
    shutil.copy2(model_dir / m.tokenizer, work / "tokenizer.json")
    corpus = build_corpus(n_texts // 3 + 1)
    texts = list(corpus.validation)[:n_texts]
    ref = TorchReferenceEncoder(
        Path(m.source["path"]), model_dir / m.tokenizer, pooling=m.pooling, max_seq_length=m.max_seq_length
    ).encode(texts)
    np.save(work / "reference.npy", ref)
    feeds = text_feeds(
        model_dir / m.tokenizer, list(corpus.calibration)[:128], m.inputs, m.max_seq_length, 16, same_width=False
    )
    for name, kw in RECIPES.items():
        quantize_dynamic_int8(fp32, work / _file(name), DynamicInt8Recipe(**kw), calibration_feeds=feeds)
    meta = {
        "model_dir": str(model_dir),
        "texts": texts,
        "pooling": m.pooling,
        "max_seq_length": m.max_seq_length,
        "recipes": {n: {"file": _file(n), **kw} for n, kw in RECIPES.items()},
    }
    (work / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    print(f"built {len(RECIPES)} graphs and the fp32 reference of {len(texts)} texts in {work}")


def embed(path: Path, tokenizer: Path, texts: Sequence[str], max_len: int, bs: int = 8) -> npt.NDArray[np.float32]:
    """Mean-pooled unit embeddings, length-sorted chunks of ``bs`` padded to their longest (as the runtime)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from streamrec.encoders.onnx import pool_and_normalize

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    enc = tok.encode_batch(list(texts))
    order = np.argsort([len(e.ids) for e in enc], kind="stable")
    out = np.zeros((len(texts), 0), np.float32)
    for start in range(0, len(texts), bs):
        idx = order[start : start + bs]
        width = max(len(enc[i].ids) for i in idx)
        ids = np.zeros((len(idx), width), np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, : len(enc[i].ids)] = enc[i].ids
            mask[row, : len(enc[i].ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(["last_hidden_state"], {k: v for k, v in feed.items() if k in names})[0]
        vecs = pool_and_normalize(hidden, mask, "mean")
        if out.shape[1] == 0:
            out = np.zeros((len(texts), vecs.shape[1]), np.float32)
        out[idx] = vecs
    return out


def score(work: Path, n_texts: int | None, cpu_label: str, out_dir: Path, with_fp32: bool) -> Path:
    meta = json.loads((work / "meta.json").read_text())
    texts = meta["texts"][:n_texts] if n_texts else meta["texts"]
    ref = np.load(work / "reference.npy")[: len(texts)]
    graphs = {n: r["file"] for n, r in meta["recipes"].items()}
    if with_fp32:
        graphs = {"fp32 (onnxruntime)": "fp32.onnx", **graphs}
    results: dict[str, Any] = {}
    for name, file in graphs.items():
        t0 = time.perf_counter()
        emb = embed(work / file, work / "tokenizer.json", texts, meta["max_seq_length"])
        cos = np.einsum("nd,nd->n", emb.astype(np.float64), ref.astype(np.float64))
        results[name] = {
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
            "passes_cpu_int8_thresholds": bool(cos.mean() >= 0.995 and cos.min() >= 0.98),
            "seconds": time.perf_counter() - t0,
        }
        print(f"{name:48s} cosine mean {cos.mean():.5f} min {cos.min():.5f}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = "".join(c if c.isalnum() else "-" for c in cpu_label).strip("-") or "native"
    path = out_dir / f"int8_portability_{label}_{stamp}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "benchmark": "int8_portability",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": "python benchmarks/int8_portability.py " + " ".join(sys.argv[1:]),
                "cpu_label": cpu_label,
                "machine": machine("/proc/cpuinfo is the host's under qemu-user: see cpu_label"),
                "params": {
                    "texts": len(texts),
                    "chunk": 8,
                    "threads": 1,
                    "reference": "PyTorch fp32",
                    "thresholds_cpu_int8": {"cos_mean": 0.995, "cos_min": 0.98},
                },
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["build", "score"])
    p.add_argument("--work", type=Path, required=True, help="directory for the graphs and the reference")
    p.add_argument("--model-dir", type=Path, help="build: an exported model directory (its fp32 graph is used)")
    p.add_argument("--texts", type=int, default=300, help="validation texts (build: how many; score: the first N)")
    p.add_argument("--cpu-label", default="native", help="score: what CPU this is (e.g. 'qemu Haswell')")
    p.add_argument("--no-fp32", action="store_true", help="score: skip the fp32 graph (slow under emulation)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    if args.step == "build":
        if args.model_dir is None:
            p.error("build needs --model-dir")
        build(args.model_dir, args.work, args.texts)
    else:
        score(args.work, args.texts, args.cpu_label, args.out, not args.no_fp32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
