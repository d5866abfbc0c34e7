"""The load-time self-check: a variant that does not embed like fp32 on this machine is not served.

"Fails on purpose": a copy of the exported model whose ``model_int8.onnx`` is replaced by a per-tensor dynamic
INT8 graph of the same model (no smoothing). It is a real, badly quantized graph (cosine vs fp32 ~0.96-0.97 on
any x86 CPU, far below the 0.995 the CPU variant must reach), re-hashed in the manifest like a genuine export.
Assertions compare with the thresholds in the manifest, never with one machine's numbers.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamrec.encoders import (
    ModelIntegrityError,
    OnnxEncoderConfig,
    OnnxTextEncoder,
    SelfCheckError,
    Variant,
    load_manifest,
)
from streamrec.encoders.manifest import MANIFEST_NAME
from streamrec.encoders.selfcheck import ReferenceSet, load_reference_set, score_self_check, thresholds_of
from streamrec.machine import cpu_info


@pytest.fixture(scope="module")
def bad_int8_model(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported model with its CPU INT8 graph replaced by a per-tensor one (fails its thresholds)."""
    from streamrec.export.testing import with_failing_cpu_variant

    return with_failing_cpu_variant(model_dir, tmp_path_factory.mktemp("bad-int8") / "model")


def test_the_exported_default_passes_on_this_machine(model_dir: Path) -> None:
    enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu"))
    sel = enc.selection
    assert (enc.variant.name, sel.variant, sel.first, sel.check_state) == ("cpu-int8",) * 3 + ("passed",)
    assert not sel.fell_back and sel.reason() == ""
    check = sel.self_check
    assert check is not None and check.passed and check.n_texts >= 24
    t = thresholds_of(enc.variant)
    assert check.cos_mean >= t["cos_mean"] and check.cos_min >= t["cos_min"]
    assert enc.stats.calls == 0 and enc.stats.texts == 0  # the check does not count as traffic


def test_a_variant_that_fails_falls_back_to_fp32_and_says_why(
    bad_int8_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="streamrec.encoders"):
        enc = OnnxTextEncoder(bad_int8_model, OnnxEncoderConfig(provider="cpu"))
    assert enc.variant.name == "fp32" and enc.provider == "CPUExecutionProvider"
    sel = enc.selection
    assert sel.fell_back and sel.first == "cpu-int8" and sel.check_state == "fallback"
    assert sel.reason().startswith("cpu-int8: cosine mean")
    assert [c.variant for c in sel.checked] == ["cpu-int8", "fp32"]
    assert not sel.checked[0].passed and sel.checked[1].passed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    failed = next(w for w in warnings if "fails its self-check" in w)
    assert "cpu-int8" in failed and "cosine vs fp32 mean" in failed and cpu_info().model_name in failed
    assert any("serves fp32 instead of cpu-int8" in w for w in warnings)
    out = enc.encode(["served by the fp32 graph"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_strict_refuses_a_variant_that_fails(bad_int8_model: Path) -> None:
    with pytest.raises(SelfCheckError, match=r"cpu-int8 fails its self-check.*strict"):
        OnnxTextEncoder(bad_int8_model, OnnxEncoderConfig(provider="cpu", self_check="strict"))


def test_off_serves_the_variant_unchecked(bad_int8_model: Path) -> None:
    enc = OnnxTextEncoder(bad_int8_model, OnnxEncoderConfig(provider="cpu", self_check="off"))
    assert enc.variant.name == "cpu-int8" and enc.selection.check_state == "off"


def test_the_worker_metric_shows_the_variant_really_used_and_why(bad_int8_model: Path, model_dir: Path) -> None:
    from prometheus_client import CollectorRegistry

    from streamrec.streams.metrics import WorkerMetrics
    from streamrec.streams.worker import publish_encoder_info

    for directory, variant, state in ((bad_int8_model, "fp32", "fallback"), (model_dir, "cpu-int8", "passed")):
        registry = CollectorRegistry()
        metrics = WorkerMetrics(registry)
        enc = OnnxTextEncoder(directory, OnnxEncoderConfig(provider="cpu"))
        publish_encoder_info(metrics, enc)
        info = next(s for s in registry.collect() if s.name == "streamrec_encoder").samples[0].labels
        assert (info["variant"], info["self_check"], info["provider"]) == (variant, state, "CPUExecutionProvider")
        if state == "fallback":
            assert info["fallback_from"] == "cpu-int8" and info["fallback_reason"].startswith("cpu-int8: cosine")
        else:
            assert info["fallback_from"] == info["fallback_reason"] == ""
        threshold = thresholds_of(enc.manifest.variants["cpu-int8"])["cos_mean"]
        int8_mean = registry.get_sample_value(
            "streamrec_encoder_self_check_cosine", {"variant": "cpu-int8", "stat": "mean"}
        )
        assert int8_mean is not None and (int8_mean < threshold) == (state == "fallback")


def test_the_reference_set_is_covered_by_the_checksums(model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(model_dir)
    name = str(manifest.self_check["file"])
    assert name in manifest.files and manifest.self_check["n_texts"] == len(
        load_reference_set(model_dir, manifest).texts
    )
    dst = tmp_path / "m"
    dst.mkdir()
    for f in (MANIFEST_NAME, manifest.tokenizer, name, manifest.variants["cpu-int8"].file):
        shutil.copy2(model_dir / f, dst / f)
    data = json.loads((dst / name).read_text())
    data["embeddings"][0][0] += 0.5  # make a failing variant pass by editing the reference: refused
    (dst / name).write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match=r"selfcheck\.json does not match"):
        OnnxTextEncoder(dst, OnnxEncoderConfig(provider="cpu"))


def test_scores_against_the_variants_thresholds() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(12, 8)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    refset = ReferenceSet(tuple(f"t{i}" for i in range(12)), ref)
    v = Variant(
        "x",
        "x.onnx",
        "CPUExecutionProvider",
        "int8",
        validation={"thresholds": {"cos_mean": 0.99, "cos_min": 0.95, "top10_overlap": 0.9}},
    )
    assert score_self_check(v, "CPU", ref, refset, 0.01).passed
    noisy = ref + rng.normal(scale=0.3, size=ref.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    bad = score_self_check(v, "CPU", noisy, refset, 0.01)
    assert not bad.passed and any(f.startswith("cosine mean") for f in bad.failures)
    assert "FAILED" in bad.describe()
    nan = score_self_check(v, "CPU", np.full_like(ref, np.nan), refset, 0.01)
    assert not nan.passed
    unknown = score_self_check(Variant("y", "y.onnx", "CPUExecutionProvider", "int8"), "CPU", ref, refset, 0.0)
    assert not unknown.passed  # no thresholds recorded: nothing to pass
