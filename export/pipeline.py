"""``export_model``: HF BERT-family folder → ONNX fp32 → INT8/fp16/QDQ variants → validated model directory.

Steps: optimum ONNX export (feature-extraction, dynamic batch and sequence axes, output ``last_hidden_state``)
→ a clean ``tokenizer.json`` (no fixed padding, truncation at ``max_seq_length``) → variants → every variant is
run through the runtime :class:`~streamrec.encoders.OnnxTextEncoder` on the CPU provider and compared with the
PyTorch fp32 reference on held-out texts → the self-check reference set (the first held-out texts and their
PyTorch fp32 embeddings, which the runtime re-embeds at load time on the machine that serves) → ``manifest.json``
with the sha256 of every file. All of it happens in a temporary sibling directory that is renamed into place
only when every variant passed, on the full validation set and on the self-check set.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.encoders.errors import ModelIntegrityError
from streamrec.encoders.manifest import CPU, CUDA, TENSORRT, Manifest, Variant, load_manifest, sha256_file
from streamrec.encoders.onnx import CPU_MAX_BATCH, OnnxEncoderConfig, OnnxTextEncoder
from streamrec.encoders.selfcheck import pick_batches, write_reference_set
from streamrec.export.corpus import build_corpus
from streamrec.export.errors import ExportError, VariantValidationError
from streamrec.export.quantize import (
    FFN_OUTPUTS,
    DynamicInt8Recipe,
    StaticQdqRecipe,
    convert_fp16,
    quantize_dynamic_int8,
    quantize_static_qdq,
    text_feeds,
)
from streamrec.export.validate import Scores, Thresholds, score
from streamrec.machine import cpu_info

__all__ = [
    "DEFAULT_CPU_RECIPE",
    "DEFAULT_TRT_RECIPE",
    "ExportOptions",
    "VariantSpec",
    "default_variants",
    "export_model",
    "is_current_export",
    "is_exported_model",
]

logger = logging.getLogger(__name__)

# SmoothQuant-style outlier migration (alpha 0.7, calibrated on text disjoint from validation), then per-channel
# int8 weights for every weight MatMul; the embedding Gather and the attention score MatMuls stay in float.
# reduce_range (7-bit weights) because onnxruntime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512
# without VNNI) use vpmaddubsw, which saturates each pair of products at 16 bits: 2 x 255 x 127 overflows, 2 x 255
# x 64 does not. With it the integer arithmetic is exact on every x86 CPU, so the graph computes the same
# numbers everywhere: measured 0.99656 cosine mean (min 0.9920, top-10 0.957) on the 300 validation texts on
# an AVX-512 VNNI EPYC; the same graph under qemu's emulated AVX2-only Haswell gave identical per-text numbers,
# and a Zen 3 EPYC (AVX2 only) 0.9966 / 0.9925 / 0.956. Without reduce_range: 0.9976 on VNNI but 0.9846
# (min 0.928) on Zen 3, below the thresholds. Speed: the same kernels, reduce_range changes no instruction.
DEFAULT_CPU_RECIPE = DynamicInt8Recipe(per_channel=True, reduce_range=True, smooth_alpha=0.7)
# TensorRT: static symmetric QDQ after the same smoothing; the FFN output projections stay in float (all-int8
# static scored cosine 0.846, this 0.996, measured on the CPU provider: not verified on a GPU).
DEFAULT_TRT_RECIPE = StaticQdqRecipe(per_channel=True, keep_float=(FFN_OUTPUTS,), smooth_alpha=0.7)


@dataclass(frozen=True)
class VariantSpec:
    """A variant to produce: ``recipe`` is ``None`` (fp32 as exported), ``"fp16"``, or a quantization recipe."""

    name: str
    file: str
    provider: str
    precision: str
    thresholds: Thresholds
    recipe: DynamicInt8Recipe | StaticQdqRecipe | str | None = None


def default_variants(cpu_recipe: DynamicInt8Recipe = DEFAULT_CPU_RECIPE) -> list[VariantSpec]:
    return [
        VariantSpec("fp32", "model_fp32.onnx", CPU, "fp32", Thresholds(0.9999, 0.999, 0.98)),
        VariantSpec("cpu-int8", "model_int8.onnx", CPU, "int8-dynamic", Thresholds(0.995, 0.98, 0.90), cpu_recipe),
        VariantSpec("cuda-fp16", "model_fp16.onnx", CUDA, "fp16", Thresholds(0.999, 0.99, 0.95), "fp16"),
        VariantSpec(
            "tensorrt-int8",
            "model_int8_qdq.onnx",
            TENSORRT,
            "int8-static-qdq",
            Thresholds(0.99, 0.97, 0.90),
            DEFAULT_TRT_RECIPE,
        ),
    ]


@dataclass(frozen=True)
class ExportOptions:
    variants: Sequence[VariantSpec] = field(default_factory=default_variants)
    validation_texts: int = 300
    calibration_texts: int = 128
    overwrite: bool = False
    threads: int = 2
    opset: int | None = None
    name: str | None = None


_ST_DEFAULTS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean"}


def read_pooling(source: Path) -> str:
    """The sentence-transformers pooling mode of ``source``; ``mean`` when it has no pooling config."""
    candidates = []
    modules = source / "modules.json"
    if modules.is_file():
        for mod in json.loads(modules.read_text(encoding="utf-8")):
            if str(mod.get("type", "")).endswith("Pooling"):
                candidates.append(source / mod.get("path", "1_Pooling") / "config.json")
    candidates.append(source / "1_Pooling" / "config.json")
    for path in candidates:
        if path.is_file():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            for key, mode in _ST_DEFAULTS.items():
                if cfg.get(key):
                    return mode
            raise ExportError(f"{path}: unsupported pooling {cfg}; streamrec supports mean, cls and max")
    return "mean"


def read_max_seq_length(source: Path, config: dict[str, Any]) -> int:
    st = source / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            return int(value)
    limit = int(config.get("max_position_embeddings", 512))
    tok_cfg = source / "tokenizer_config.json"
    if tok_cfg.is_file():
        mml = json.loads(tok_cfg.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(mml, int) and 0 < mml < limit:
            return mml
    return limit


def _tool_versions() -> dict[str, str]:
    out = {}
    for dist in (
        "streamrec",
        "onnxruntime-gpu",
        "onnxruntime",
        "onnx",
        "optimum",
        "optimum-onnx",
        "transformers",
        "tokenizers",
        "torch",
        "numpy",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _onnx_export(source: Path, work: Path, opset: int | None) -> Path:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ExportError(f"ONNX export needs optimum-onnx ({exc}); install streamrec[export]") from exc
    out = work / "_optimum"
    main_export(
        str(source),
        output=str(out),
        task="feature-extraction",
        opset=opset,
        do_validation=False,
        local_files_only=True,
        library_name="transformers",
    )
    if not (out / "model.onnx").is_file():
        raise ExportError(f"optimum wrote no model.onnx for {source}")
    return out


def _write_tokenizer(src_dir: Path, source: Path, dst: Path, max_len: int) -> None:
    from tokenizers import Tokenizer

    path = src_dir / "tokenizer.json"
    if not path.is_file():
        path = source / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{source} has no fast tokenizer (tokenizer.json); save one with transformers first")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()  # the shipped file pads every text to 128 tokens: the runtime pads to the batch's longest
    tok.enable_truncation(max_length=max_len)
    tok.save(str(dst / "tokenizer.json"))
    for extra in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        if (src_dir / extra).is_file():
            shutil.copy2(src_dir / extra, dst / extra)


def recipe_record(spec: VariantSpec) -> dict[str, Any]:
    """How ``spec`` is made, as the manifest records it (``variant.recipe``)."""
    if spec.recipe is None:
        return {"kind": "fp32"}
    if spec.recipe == "fp16":
        return {"kind": "fp16", "keep_io_types": True}
    if isinstance(spec.recipe, DynamicInt8Recipe | StaticQdqRecipe):
        return spec.recipe.to_dict()
    raise ExportError(f"variant {spec.name}: unknown recipe {spec.recipe!r}")


def _build_variant(
    spec: VariantSpec, fp32: Path, work: Path, calibration: Sequence[str], inputs: Sequence[str], max_len: int
) -> dict[str, Any]:
    dst = work / spec.file
    if spec.recipe is None:
        if dst != fp32:
            shutil.copy2(fp32, dst)
        return recipe_record(spec)
    if spec.recipe == "fp16":
        convert_fp16(fp32, dst)
        return recipe_record(spec)
    if isinstance(spec.recipe, DynamicInt8Recipe):
        feeds = None
        if spec.recipe.smooth_alpha is not None or spec.recipe.outlier_channels:
            feeds = text_feeds(
                work / "tokenizer.json",
                calibration[: spec.recipe.calibration_texts],
                inputs,
                max_len,
                16,
                same_width=False,
            )
        quantize_dynamic_int8(fp32, dst, spec.recipe, calibration_feeds=feeds)
        return spec.recipe.to_dict()
    if isinstance(spec.recipe, StaticQdqRecipe):
        quantize_static_qdq(
            fp32,
            dst,
            spec.recipe,
            tokenizer_file=work / "tokenizer.json",
            calibration_texts=calibration,
            inputs=inputs,
            max_seq_length=max_len,
        )
        return spec.recipe.to_dict()
    raise ExportError(f"variant {spec.name}: unknown recipe {spec.recipe!r}")


def _write_self_check_set(work: Path, validation: Sequence[str], ref: Any, reference_name: str) -> dict[str, Any]:
    """Batches of the CPU validation run below (length-sorted chunks of the runtime's CPU batch size)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(work / "tokenizer.json"))
    lengths = [len(e.ids) for e in tok.encode_batch(list(validation))]
    chunks = pick_batches(lengths, CPU_MAX_BATCH)
    idx = [i for chunk in chunks for i in chunk]
    return write_reference_set(work, [validation[i] for i in idx], ref[idx], reference_name, [len(c) for c in chunks])


def _make_manifest(
    work: Path,
    *,
    name: str,
    source: dict[str, Any],
    dim: int,
    max_len: int,
    pooling: str,
    inputs: Sequence[str],
    variants: dict[str, Variant],
    self_check: dict[str, Any],
) -> Manifest:
    files = {
        p.relative_to(work).as_posix(): sha256_file(p)
        for p in sorted(work.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    defaults: dict[str, str] = {}
    for v in variants.values():  # first variant per provider, but a quantized one beats fp32
        cur = defaults.get(v.provider)
        if cur is None or (variants[cur].precision == "fp32" and v.precision != "fp32"):
            defaults[v.provider] = v.name
    return Manifest(
        name=name,
        source=source,
        dim=dim,
        max_seq_length=max_len,
        pooling=pooling,
        normalize=True,
        inputs=tuple(inputs),
        output="last_hidden_state",
        tokenizer="tokenizer.json",
        files=files,
        variants=variants,
        default_variant=defaults,
        tools=_tool_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        self_check=self_check,
    )


def export_model(
    source: Path,
    output: Path,
    options: ExportOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export ``source`` (a local HF BERT-family folder) into ``output``; return the manifest written.

    Raises :class:`VariantValidationError` (nothing is written) when a variant scores below its thresholds.
    """
    opts = options or ExportOptions()
    say = progress or (lambda msg: logger.info("%s", msg))
    source, output = Path(source).resolve(), Path(output).expanduser().resolve()
    config_path = source / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{source} is not a Hugging Face model folder (no config.json)")
    if output.exists() and not opts.overwrite:
        raise ExportError(f"{output} already exists; pass overwrite to replace it")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    pooling, max_len = read_pooling(source), read_max_seq_length(source, config)
    dim = int(config.get("hidden_size", 0))
    if dim <= 0:
        raise ExportError(f"{config_path} has no hidden_size")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    t0 = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(opts.threads)
        say(f"exporting {source} to ONNX (pooling {pooling}, max_seq_length {max_len}, dim {dim})")
        optimum_dir = _onnx_export(source, work, opts.opset)
        fp32 = work / "model_fp32.onnx"
        shutil.move(optimum_dir / "model.onnx", fp32)
        _write_tokenizer(optimum_dir, source, work, max_len)
        shutil.rmtree(optimum_dir)
        import onnx

        inputs = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
        corpus = build_corpus(max(opts.validation_texts, opts.calibration_texts) // 3 + 1)
        validation = list(corpus.validation)[: opts.validation_texts]
        say(f"PyTorch fp32 reference on {len(validation)} held-out texts")
        from streamrec.export.reference import TorchReferenceEncoder

        reference = TorchReferenceEncoder(source, work / "tokenizer.json", pooling=pooling, max_seq_length=max_len)
        ref = reference.encode(validation)
        del reference
        reference_name = "transformers fp32 + pooling + L2 norm"
        self_check = _write_self_check_set(work, validation, ref, reference_name)

        variants: dict[str, Variant] = {}
        for spec in opts.variants:
            say(f"building variant {spec.name} ({spec.precision} for {spec.provider})")
            recipe = _build_variant(spec, fp32, work, corpus.calibration[: opts.calibration_texts], inputs, max_len)
            variants[spec.name] = Variant(spec.name, spec.file, spec.provider, spec.precision, recipe, {})
        if not any(s.recipe is None and s.file == fp32.name for s in opts.variants):
            fp32.unlink()
        name = opts.name or source.name
        src_info = {
            "path": str(source),
            "model_type": config.get("model_type", ""),
            "architectures": config.get("architectures", []),
            "weights_sha256": {p.name: sha256_file(p) for p in sorted(source.glob("*.safetensors"))},
        }
        _make_manifest(
            work,
            name=name,
            source=src_info,
            dim=dim,
            max_len=max_len,
            pooling=pooling,
            inputs=inputs,
            variants=variants,
            self_check=self_check,
        ).write(work)

        failures = []
        validated: dict[str, Variant] = {}
        for spec in opts.variants:
            enc = OnnxTextEncoder(
                work,
                OnnxEncoderConfig(
                    provider="cpu", variant=spec.name, verify=False, intra_op_threads=opts.threads, self_check="off"
                ),
            )
            s: Scores = score(enc.encode(validation), ref)
            bad = spec.thresholds.failures(s)
            # the load-time self-check must pass here too (it runs each reference text alone, so its numbers
            # differ a little from the batched validation above)
            check = enc.run_self_check(thresholds=vars(spec.thresholds))
            bad += [f"self-check set: {f}" for f in check.failures]
            say(
                f"variant {spec.name}: cosine mean {s.cos_mean:.4f} min {s.cos_min:.4f}, "
                f"top-10 overlap {s.top10_overlap:.3f}; self-check set {check.cos_mean:.4f} / {check.cos_min:.4f}"
                + (f" — FAILED: {'; '.join(bad)}" if bad else " — passed")
            )
            if bad:
                failures.append(f"{spec.name}: {'; '.join(bad)}")
            v = variants[spec.name]
            validated[spec.name] = Variant(
                v.name,
                v.file,
                v.provider,
                v.precision,
                v.recipe,
                {
                    **s.to_dict(),
                    "thresholds": vars(spec.thresholds),
                    "validated_on": "CPUExecutionProvider",
                    "reference": reference_name,
                    "cpu": cpu_info().describe(),
                    "self_check": {
                        "cos_mean": round(check.cos_mean, 6),
                        "cos_min": round(check.cos_min, 6),
                        "n_texts": check.n_texts,
                    },
                },
            )
        if failures:
            raise VariantValidationError(
                "exported variants fall below their validation thresholds vs the PyTorch fp32 reference: "
                + " | ".join(failures)
                + ". Nothing was written; use a less aggressive recipe (keep more MatMuls "
                "in float) or check the source model."
            )
        manifest = _make_manifest(
            work,
            name=name,
            source=src_info,
            dim=dim,
            max_len=max_len,
            pooling=pooling,
            inputs=inputs,
            variants=validated,
            self_check=self_check,
        )
        manifest.write(work)
        _replace(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    say(f"wrote {output} in {time.perf_counter() - t0:.0f} s")
    return manifest


def is_exported_model(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a manifest of the current format whose files all match their sha256."""
    try:
        load_manifest(model_dir).verify(model_dir)
    except ModelIntegrityError:
        return False
    return True


def is_current_export(model_dir: Path, variants: Sequence[VariantSpec] | None = None) -> bool:
    """:func:`is_exported_model`, and made by this code: every variant of ``variants`` (default:
    :func:`default_variants`) is there with the same recipe and thresholds. An export made by an older
    streamrec (another manifest format, another INT8 recipe) is stale: re-export it."""
    try:
        manifest = load_manifest(model_dir)
        manifest.verify(model_dir)
    except ModelIntegrityError:
        return False
    for spec in default_variants() if variants is None else variants:
        v = manifest.variants.get(spec.name)
        if (
            v is None
            or dict(v.recipe) != recipe_record(spec)
            or v.validation.get("thresholds") != vars(spec.thresholds)
        ):
            logger.info("%s: variant %s differs from this version's recipe or thresholds", model_dir, spec.name)
            return False
    return True


def _replace(work: Path, output: Path) -> None:
    """Rename ``work`` to ``output`` (the old ``output``, if any, is moved aside first and then deleted)."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
        output.rename(old)
    try:
        work.rename(output)
    except OSError:
        if old is not None:
            old.rename(output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
