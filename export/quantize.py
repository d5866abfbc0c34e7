"""Graph transforms from the fp32 ONNX export: dynamic INT8 (CPU), fp16 (CUDA), QDQ static INT8 (TensorRT).

Each recipe is a frozen dataclass recorded verbatim in the manifest, so a variant says how it was made.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.export.errors import ExportError

__all__ = [
    "FFN_OUTPUTS",
    "DynamicInt8Recipe",
    "StaticQdqRecipe",
    "convert_fp16",
    "matmul_nodes",
    "quantize_dynamic_int8",
    "quantize_static_qdq",
    "text_feeds",
]

logger = logging.getLogger(__name__)

# FFN output projection (intermediate → hidden) of every BERT layer, as the torch exporter names the MatMul.
FFN_OUTPUTS = r"/layer\.\d+/output/dense/MatMul$"


@dataclass(frozen=True)
class DynamicInt8Recipe:
    """onnxruntime ``quantize_dynamic`` settings.

    ``keep_float`` lists regular expressions of MatMul node names left in fp32 (the sensitive ones).
    ``smooth_alpha``: migrate activation outliers into the weights first (:mod:`streamrec.export.smooth`),
    measured on ``calibration_texts`` texts; ``None`` skips it. ``outlier_channels`` > 0: the ``k`` input channels
    of each weight MatMul with the largest calibrated max |x| are computed in fp32 beside the int8 MatMul
    (:mod:`streamrec.export.outliers`).
    Only MatMuls with a constant weight are quantized: the embedding ``Gather`` is left in float (quantizing it
    costs accuracy and buys no speed) and so are the activation×activation attention MatMuls.
    """

    per_channel: bool = True
    reduce_range: bool = False
    keep_float: tuple[str, ...] = ()
    smooth_alpha: float | None = None
    outlier_channels: int = 0
    calibration_texts: int = 128

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "dynamic-int8", **asdict(self), "keep_float": list(self.keep_float)}


@dataclass(frozen=True)
class StaticQdqRecipe:
    """onnxruntime ``quantize_static`` in QDQ format, symmetric int8 (what TensorRT's explicit quantization wants)."""

    per_channel: bool = True
    calibration_method: str = "minmax"
    calibration_texts: int = 128
    batch_size: int = 16
    keep_float: tuple[str, ...] = field(default=())
    smooth_alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "static-qdq-int8", **asdict(self), "keep_float": list(self.keep_float)}


def matmul_nodes(model_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type == "MatMul"]


def _excluded(model_path: Path, patterns: Sequence[str]) -> list[str]:
    if not patterns:
        return []
    regexes = [re.compile(p) for p in patterns]
    names = [n for n in matmul_nodes(model_path) if any(r.search(n) for r in regexes)]
    if not names:
        raise ExportError(f"keep_float patterns {list(patterns)} match no MatMul node of {model_path.name}")
    return names


def _smoothed(src: Path, work: Path, alpha: float | None, feeds: Sequence[dict[str, Any]] | None) -> Path:
    if alpha is None:
        return src
    if not feeds:
        raise ExportError("smoothing needs calibration texts")
    from streamrec.export.smooth import activation_channel_max, smooth_model

    dst = work / f"{src.stem}.smooth-{alpha}.tmp.onnx"
    smooth_model(src, dst, activation_channel_max(src, feeds), alpha)
    return dst


def quantize_dynamic_int8(
    src: Path, dst: Path, recipe: DynamicInt8Recipe, *, calibration_feeds: Sequence[dict[str, Any]] | None = None
) -> Path:
    """Dynamic INT8 (weights int8 per channel, activations quantized at run time) for the CPU provider."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = _excluded(src, recipe.keep_float)
    logger.info("dynamic INT8 %s (%d MatMuls kept in float)", recipe, len(exclude))
    feeds = None if calibration_feeds is None else list(calibration_feeds)
    base = _smoothed(src, dst.parent, recipe.smooth_alpha, feeds)
    temps = [base] if base != src else []
    try:
        if recipe.outlier_channels > 0:
            if not feeds:
                raise ExportError("the outlier split needs calibration texts")
            from streamrec.export.outliers import split_outliers
            from streamrec.export.smooth import activation_channel_max

            split = dst.parent / f"{src.stem}.split-{recipe.outlier_channels}.tmp.onnx"
            temps.append(split)
            exclude += split_outliers(base, split, activation_channel_max(base, feeds), recipe.outlier_channels)
            base = split
        quantize_dynamic(
            str(base),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=exclude,
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return dst


class _TextFeeds:
    """``CalibrationDataReader`` over tokenized texts (batches padded to their longest)."""

    def __init__(self, batches: list[dict[str, np.ndarray[Any, Any]]]) -> None:
        self._iter: Iterator[dict[str, np.ndarray[Any, Any]]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - unused by the minmax calibrator
        raise NotImplementedError


def text_feeds(
    tokenizer_file: Path, texts: Sequence[str], inputs: Sequence[str], max_len: int, batch_size: int, same_width: bool
) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Batches padded to their longest text, or all to the longest overall (histogram calibrators need that)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    out = []
    longest = max(len(e.ids) for e in tok.encode_batch(list(texts)))
    for start in range(0, len(texts), batch_size):
        enc = tok.encode_batch(list(texts[start : start + batch_size]))
        width = longest if same_width else max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        out.append({k: feed[k] for k in inputs})
    return out


def quantize_static_qdq(
    src: Path,
    dst: Path,
    recipe: StaticQdqRecipe,
    *,
    tokenizer_file: Path,
    calibration_texts: Sequence[str],
    inputs: Sequence[str],
    max_seq_length: int,
) -> Path:
    """Static INT8 in QDQ format calibrated on ``calibration_texts`` (product-like text)."""
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if recipe.calibration_method not in methods:
        raise ExportError(f"unknown calibration method {recipe.calibration_method!r}; use one of {sorted(methods)}")
    texts = list(calibration_texts)[: recipe.calibration_texts]
    if not texts:
        raise ExportError("static quantization needs calibration texts")
    reader = _TextFeeds(
        text_feeds(
            tokenizer_file,
            texts,
            inputs,
            max_seq_length,
            recipe.batch_size,
            same_width=recipe.calibration_method != "minmax",
        )
    )
    exclude = _excluded(src, recipe.keep_float)
    logger.info("static QDQ INT8 %s on %d calibration texts", recipe, len(texts))
    smooth_feeds = None
    if recipe.smooth_alpha is not None:
        smooth_feeds = text_feeds(tokenizer_file, texts, inputs, max_seq_length, recipe.batch_size, same_width=False)
    base = _smoothed(src, dst.parent, recipe.smooth_alpha, smooth_feeds)
    try:
        _static(base, dst, reader, recipe, exclude, methods[recipe.calibration_method])
    finally:
        if base != src:
            base.unlink(missing_ok=True)
    return dst


def _static(src: Path, dst: Path, reader: Any, recipe: StaticQdqRecipe, exclude: list[str], method: Any) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=recipe.per_channel,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
        calibrate_method=method,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True},
    )


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs kept (``keep_io_types``), for the CUDA provider."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(dst))
    return dst


def ffn_output_pattern(layers: Sequence[int]) -> tuple[str, ...]:
    """``keep_float`` patterns for the FFN output MatMul of the given layers."""
    return tuple(rf"/layer\.{i}/output/dense/MatMul$" for i in layers)
