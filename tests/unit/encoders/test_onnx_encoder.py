"""OnnxTextEncoder on the exported model: shapes, norms, order, awkward input, integrity, threads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.encoders import (
    EncoderError,
    ModelIntegrityError,
    OnnxEncoderConfig,
    OnnxTextEncoder,
    TextEncoder,
)
from streamrec.encoders.manifest import MANIFEST_NAME, load_manifest

TEXTS = [
    "Toy Story (1995) - Animation, Children's, Comedy",
    "Acme wireless noise-cancelling headphones",
    "cheap running shoes",
    "stainless steel frying pan 2-pack",
    "",
    "北京烤鸭 recipe",
    "🎧 headphones 🔥",
    "naïve résumé café",
]


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> OnnxTextEncoder:
    return OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu"))


def test_is_a_text_encoder(encoder: OnnxTextEncoder) -> None:
    assert isinstance(encoder, TextEncoder)
    assert encoder.dim == 384
    assert encoder.provider == "CPUExecutionProvider"
    assert encoder.variant.name == "cpu-int8"
    assert "cpu-int8" in encoder.name
    assert encoder.max_batch_size == 8  # length-sorted chunks of 8 on CPU unless configured


def test_shapes_dtype_and_unit_norms(encoder: OnnxTextEncoder) -> None:
    out = encoder.encode(TEXTS)
    assert out.shape == (len(TEXTS), 384)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_empty_input(encoder: OnnxTextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_order_is_preserved(encoder: OnnxTextEncoder) -> None:
    forward = encoder.encode(TEXTS)
    backward = encoder.encode(TEXTS[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    # one text at a time agrees closely; not exactly with dynamic INT8, whose activation scale is per batch
    singles = np.vstack([encoder.encode([t]) for t in TEXTS])
    assert np.min(np.sum(singles * forward, axis=1)) > 0.98


def test_batches_larger_than_max_batch_size(model_dir: Path) -> None:
    enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", max_batch_size=3))
    texts = [f"product number {i} {'x' * (i % 7)}" for i in range(10)]
    out = enc.encode(texts)
    assert out.shape == (10, 384)
    assert enc.stats.batches == 4 and enc.stats.texts == 10
    assert max(enc.stats.batch_sizes) <= 3
    assert float(out[5] @ enc.encode([texts[5]])[0]) > 0.98  # dynamic INT8: activation scale is per batch


def test_very_long_input_is_truncated(encoder: OnnxTextEncoder) -> None:
    before = encoder.stats.truncated
    long_text = "lorem ipsum dolor sit amet " * 5000
    out = encoder.encode([long_text, "short"])
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.stats.truncated == before + 1
    assert len(encoder.tokenize([long_text])[0]) == encoder.max_seq_length == 256


def test_semantics_survive_quantization(encoder: OnnxTextEncoder) -> None:
    texts = ["cheap running shoes", "Kestrel running shoes for men", "stainless steel frying pan"]
    q, near, far = encoder.encode(texts)
    assert float(q @ near) > float(q @ far) + 0.2


@pytest.mark.parametrize("bad", ["a single string", b"bytes", [1, 2], ["ok", None], None, 42])
def test_bad_inputs_raise_encoder_error(encoder: OnnxTextEncoder, bad: Any) -> None:
    with pytest.raises(EncoderError):
        encoder.encode(bad)


def test_tuple_and_generator_free_sequences(encoder: OnnxTextEncoder) -> None:
    assert encoder.encode(("a", "b")).shape == (2, 384)


def test_variants_agree_with_fp32(model_dir: Path) -> None:
    texts = TEXTS * 2
    ref = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", variant="fp32")).encode(texts)
    # Awkward texts in mixed-length padded batches, so looser than the validation thresholds (length-sorted
    # chunks of real text). The weakest row is the empty text (2 tokens padded to the batch's longest): cpu-int8
    # with 7-bit weights (reduce_range) ~0.978 there, the same on every x86 CPU; the pre-fix 8-bit recipe on an
    # AVX2 CPU without VNNI fell to ~0.93 on ordinary text.
    for variant, floor in (("cpu-int8", 0.97), ("cuda-fp16", 0.999), ("tensorrt-int8", 0.90)):
        enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", variant=variant))
        assert enc.variant.name == variant  # each passed its own load-time self-check here: no fallback
        assert np.min(np.sum(enc.encode(texts) * ref, axis=1)) > floor, variant


def test_two_threads_turn_spinning_off(model_dir: Path) -> None:
    captured: list[Any] = []

    def factory(path: str, options: Any, providers: list[Any]) -> Any:
        import onnxruntime as ort

        captured.append(options)
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", intra_op_threads=2), session_factory=factory)
    assert enc.encode(["hello"]).shape == (1, 384)
    opts = captured[0]
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_config_values() -> None:
    with pytest.raises(EncoderError):
        OnnxEncoderConfig(intra_op_threads=0)
    with pytest.raises(EncoderError):
        OnnxEncoderConfig(max_batch_size=0)


def test_unknown_variant_and_provider(model_dir: Path) -> None:
    with pytest.raises(EncoderError, match="unknown variant"):
        OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", variant="nope"))
    with pytest.raises(EncoderError, match="unknown provider"):
        OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="tpu"))  # type: ignore[arg-type]


# --- integrity: a copy of the files the CPU variant needs, then damage it --------------------------------------


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    manifest = load_manifest(model_dir)
    dst = tmp_path / "model"
    dst.mkdir()
    for name in (MANIFEST_NAME, manifest.tokenizer, manifest.variants["cpu-int8"].file, manifest.self_check["file"]):
        shutil.copy2(model_dir / name, dst / name)
    return dst


def test_copy_loads(model_copy: Path) -> None:
    assert OnnxTextEncoder(model_copy, OnnxEncoderConfig(provider="cpu")).encode(["x"]).shape == (1, 384)


def test_tampered_model_file_is_refused(model_copy: Path) -> None:
    path = model_copy / "model_int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"model_int8\.onnx does not match"):
        OnnxTextEncoder(model_copy, OnnxEncoderConfig(provider="cpu"))


def test_tampered_tokenizer_is_refused(model_copy: Path) -> None:
    with (model_copy / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json"):
        OnnxTextEncoder(model_copy, OnnxEncoderConfig(provider="cpu"))


def test_missing_file_is_refused(model_copy: Path) -> None:
    (model_copy / "model_int8.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        OnnxTextEncoder(model_copy, OnnxEncoderConfig(provider="cpu"))


def test_missing_or_malformed_manifest_is_refused(model_copy: Path) -> None:
    (model_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="cannot read"):
        OnnxTextEncoder(model_copy)
    (model_copy / MANIFEST_NAME).write_text('{"name": "x"}')
    with pytest.raises(ModelIntegrityError, match="malformed"):
        OnnxTextEncoder(model_copy)
    (model_copy / MANIFEST_NAME).unlink()
    with pytest.raises(ModelIntegrityError, match=r"no manifest\.json"):
        OnnxTextEncoder(model_copy)


def test_verify_can_be_skipped_but_is_on_by_default(model_copy: Path) -> None:
    with (model_copy / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    enc = OnnxTextEncoder(model_copy, OnnxEncoderConfig(provider="cpu", verify=False))
    assert enc.encode(["still works"]).shape == (1, 384)
