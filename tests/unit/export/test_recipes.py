"""The graph rewrites behind the INT8 recipes keep the fp32 function unchanged (before quantization)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.encoders import load_manifest
from streamrec.export import DynamicInt8Recipe, ExportError
from streamrec.export.quantize import quantize_dynamic_int8, text_feeds

TEXTS = ["Toy Story (1995) - Animation", "Acme wireless headphones for travel", "cheap running shoes", "🎧 gift"]


@pytest.fixture(scope="module")
def fp32_and_feeds(model_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    m = load_manifest(model_dir)
    feeds = text_feeds(model_dir / m.tokenizer, TEXTS, m.inputs, m.max_seq_length, 2, same_width=False)
    return model_dir / m.variants["fp32"].file, feeds


def run(path: Path, feeds: list[dict[str, Any]]) -> list[np.ndarray[Any, Any]]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]


def test_smoothing_and_outlier_split_are_exact_in_fp32(fp32_and_feeds: tuple[Path, list[Any]], tmp_path: Path) -> None:
    from streamrec.export.outliers import OUTLIER_SUFFIX, split_outliers
    from streamrec.export.smooth import activation_channel_max, smooth_model

    fp32, feeds = fp32_and_feeds
    act = activation_channel_max(fp32, feeds)
    assert len(act) == 24  # 4 distinct weight-MatMul inputs per layer x 6 layers
    assert smooth_model(fp32, tmp_path / "s.onnx", act, 0.7) == 24
    kept = split_outliers(fp32, tmp_path / "o.onnx", act, k=4)
    assert len(kept) == 36 and all(k.endswith(OUTLIER_SUFFIX) for k in kept)
    ref = run(fp32, feeds)
    for variant in ("s.onnx", "o.onnx"):
        for a, b in zip(run(tmp_path / variant, feeds), ref, strict=True):
            np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-3)


def test_recipe_needs_calibration_when_it_calibrates(fp32_and_feeds: tuple[Path, list[Any]], tmp_path: Path) -> None:
    fp32, _ = fp32_and_feeds
    with pytest.raises(ExportError, match="calibration"):
        quantize_dynamic_int8(fp32, tmp_path / "x.onnx", DynamicInt8Recipe(smooth_alpha=0.7))
    with pytest.raises(ExportError, match="match no MatMul"):
        quantize_dynamic_int8(fp32, tmp_path / "x.onnx", DynamicInt8Recipe(keep_float=("nothing-like-this",)))


def test_recipes_are_recorded_in_the_manifest(model_dir: Path) -> None:
    recipe = load_manifest(model_dir).variants["cpu-int8"].recipe
    assert recipe["kind"] == "dynamic-int8" and recipe["per_channel"] is True
    assert recipe["smooth_alpha"] == 0.7
    # 7-bit weights: no 16-bit saturation in vpmaddubsw on CPUs without VNNI, so the same numbers on every x86
    assert recipe["reduce_range"] is True
