"""Provider choice, with onnxruntime's answers faked: what it lists vs what a session really runs on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.encoders import (
    EncoderError,
    Manifest,
    OnnxEncoderConfig,
    OnnxTextEncoder,
    ProviderUnavailableError,
    Variant,
    plan_candidates,
)
from streamrec.encoders.manifest import CPU, CUDA, TENSORRT
from streamrec.encoders.providers import ProviderChoice, open_session

ALL = [TENSORRT, CUDA, CPU]


def make_manifest(with_gpu: bool = True) -> Manifest:
    variants = {
        "fp32": Variant("fp32", "fp32.onnx", CPU, "fp32"),
        "cpu-int8": Variant("cpu-int8", "int8.onnx", CPU, "int8-dynamic"),
    }
    if with_gpu:
        variants["cuda-fp16"] = Variant("cuda-fp16", "fp16.onnx", CUDA, "fp16")
        variants["tensorrt-int8"] = Variant("tensorrt-int8", "qdq.onnx", TENSORRT, "int8-static-qdq")
    defaults = {CPU: "cpu-int8"} | ({CUDA: "cuda-fp16", TENSORRT: "tensorrt-int8"} if with_gpu else {})
    return Manifest(
        name="m",
        source={},
        dim=4,
        max_seq_length=8,
        pooling="mean",
        normalize=True,
        inputs=("input_ids", "attention_mask"),
        output="last_hidden_state",
        tokenizer="tokenizer.json",
        files={"tokenizer.json": "0", **{v.file: "0" for v in variants.values()}},
        variants=variants,
        default_variant=defaults,
    )


def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    plan = plan_candidates(make_manifest(), "auto", ALL)
    assert [(c.provider, c.variant.name) for c in plan] == [
        (TENSORRT, "tensorrt-int8"),
        (CUDA, "cuda-fp16"),
        (CPU, "cpu-int8"),
    ]


def test_auto_skips_what_the_build_does_not_list() -> None:
    assert [c.provider for c in plan_candidates(make_manifest(), "auto", [CUDA, CPU])] == [CUDA, CPU]
    assert [c.provider for c in plan_candidates(make_manifest(), "auto", [CPU])] == [CPU]


def test_auto_skips_providers_the_model_has_no_variant_for() -> None:
    assert [c.provider for c in plan_candidates(make_manifest(with_gpu=False), "auto", ALL)] == [CPU]


def test_explicit_provider_gives_one_candidate_or_an_error() -> None:
    assert [c.provider for c in plan_candidates(make_manifest(), "cuda", ALL)] == [CUDA]
    with pytest.raises(ProviderUnavailableError, match="does not offer"):
        plan_candidates(make_manifest(), "tensorrt", [CUDA, CPU])
    with pytest.raises(EncoderError, match="no variant"):
        plan_candidates(make_manifest(with_gpu=False), "cuda", ALL)


def test_variant_override_runs_that_graph_on_the_chosen_provider() -> None:
    plan = plan_candidates(make_manifest(), "cpu", ALL, variant="cuda-fp16")
    assert plan == [ProviderChoice(CPU, make_manifest().variants["cuda-fp16"])]


def test_fallbacks_after_each_providers_variant_end_with_fp32() -> None:
    plan = plan_candidates(make_manifest(), "auto", ALL, fallbacks=True)
    assert [(c.provider, c.variant.name) for c in plan] == [
        (TENSORRT, "tensorrt-int8"),  # no fp32 on TensorRT: its INT8 engine needs the QDQ graph
        (CUDA, "cuda-fp16"),
        (CUDA, "fp32"),
        (CPU, "cpu-int8"),
        (CPU, "fp32"),
    ]
    forced = plan_candidates(make_manifest(), "cpu", ALL, variant="cuda-fp16", fallbacks=True)
    assert [c.variant.name for c in forced] == ["cuda-fp16", "fp32"]
    assert [c.variant.name for c in plan_candidates(make_manifest(), "cpu", ALL, variant="fp32", fallbacks=True)] == [
        "fp32"
    ]


class FakeSession:
    def __init__(self, providers: list[str]) -> None:
        self._providers = providers

    def get_providers(self) -> list[str]:
        return self._providers

    def get_inputs(self) -> Sequence[Any]:
        return []

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> list[Any]:
        raise AssertionError("not used")


class FakeOrt:
    """Answers like onnxruntime-gpu on a machine whose GPU libraries do or do not load."""

    def __init__(self, loads: set[str], raises: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.loads = loads
        self.raises = raises
        self.calls: list[tuple[str, list[Any]]] = []

    def __call__(self, path: str, options: Any, providers: list[Any]) -> FakeSession:
        self.calls.append((path, providers))
        first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if first in self.raises:
            raise RuntimeError(f"{first}: libcudart.so.12: cannot open shared object file")
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        return FakeSession([p for p in names if p in self.loads or p == CPU])


def test_silent_cpu_fallback_is_detected_and_the_cpu_variant_used(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeOrt(loads=set())  # lists CUDA and TensorRT, but only CPU loads
    plan = plan_candidates(make_manifest(), "auto", ALL)
    with caplog.at_level(logging.INFO, logger="streamrec.encoders.providers"):
        _, choice = open_session(Path("/m"), plan, lambda: None, fake)
    assert choice.provider == CPU and choice.variant.name == "cpu-int8"
    assert [Path(p).name for p, _ in fake.calls] == ["qdq.onnx", "fp16.onnx", "int8.onnx"]
    assert "the session runs on ['CPUExecutionProvider']" in caplog.text
    assert "encoder runs cpu-int8 on CPUExecutionProvider" in caplog.text


def test_cuda_used_when_it_really_loads() -> None:
    fake = FakeOrt(loads={CUDA})
    _, choice = open_session(Path("/m"), plan_candidates(make_manifest(), "auto", ALL), lambda: None, fake)
    assert choice.provider == CUDA and choice.variant.name == "cuda-fp16"


def test_tensorrt_gets_int8_and_engine_cache_options(tmp_path: Path) -> None:
    fake = FakeOrt(loads={TENSORRT, CUDA})
    _, choice = open_session(
        Path("/m"), plan_candidates(make_manifest(), "auto", ALL), lambda: None, fake, engine_cache_dir=tmp_path
    )
    assert choice.provider == TENSORRT
    name, opts = fake.calls[0][1][0]
    assert name == TENSORRT and opts["trt_int8_enable"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path)


def test_session_errors_fall_through_to_the_next_provider() -> None:
    fake = FakeOrt(loads={TENSORRT, CUDA}, raises={TENSORRT})
    _, choice = open_session(Path("/m"), plan_candidates(make_manifest(), "auto", ALL), lambda: None, fake)
    assert choice.provider == CUDA


def test_explicit_provider_that_falls_back_is_an_error() -> None:
    fake = FakeOrt(loads=set())
    with pytest.raises(ProviderUnavailableError, match="session runs on"):
        open_session(Path("/m"), plan_candidates(make_manifest(), "cuda", ALL), lambda: None, fake, strict=True)


def test_nothing_loads() -> None:
    class Broken(FakeOrt):
        def __call__(self, path: str, options: Any, providers: list[Any]) -> FakeSession:
            raise RuntimeError("broken install")

    with pytest.raises(ProviderUnavailableError, match="broken install"):
        open_session(Path("/m"), plan_candidates(make_manifest(), "auto", ALL), lambda: None, Broken(set()))


# --- the same through OnnxTextEncoder on the real exported model ------------------------------------------------


def real_sessions_reporting(reported: set[str]) -> Any:
    """A factory that builds real CPU sessions but reports ``reported`` providers as loaded (a faked GPU)."""
    import onnxruntime as ort

    def factory(path: str, options: Any, providers: list[Any]) -> Any:
        session = ort.InferenceSession(path, sess_options=options, providers=[CPU])
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        real_get = session.get_providers
        session.get_providers = lambda: [p for p in names if p in reported] + real_get()  # type: ignore[method-assign]
        return session

    return factory


def test_encoder_falls_back_to_cpu_when_gpus_are_listed_but_do_not_load(model_dir: Path) -> None:
    enc = OnnxTextEncoder(model_dir, available_providers=lambda: ALL, session_factory=real_sessions_reporting(set()))
    assert (enc.provider, enc.variant.name) == (CPU, "cpu-int8")
    assert enc.stats.provider == CPU
    # providers that do not load are not a fallback of the model: the metric says "passed", no fallback_from
    sel = enc.selection
    assert sel.first == "cpu-int8" and not sel.fell_back and sel.check_state == "passed" and sel.reason() == ""
    assert [u.split(":")[0] for u in sel.unavailable] == [TENSORRT, CUDA]


def test_encoder_picks_the_fp16_graph_when_cuda_loads(model_dir: Path) -> None:
    enc = OnnxTextEncoder(
        model_dir, available_providers=lambda: [CUDA, CPU], session_factory=real_sessions_reporting({CUDA})
    )
    assert (enc.provider, enc.variant.name) == (CUDA, "cuda-fp16")
    out = enc.encode(["fp16 graph, run by the CPU provider here"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_encoder_explicit_cuda_without_cuda_is_an_error(model_dir: Path) -> None:
    with pytest.raises(ProviderUnavailableError):
        OnnxTextEncoder(
            model_dir,
            OnnxEncoderConfig(provider="cuda"),
            available_providers=lambda: ALL,
            session_factory=real_sessions_reporting(set()),
        )


def _cuda_really_loads(model_dir: Path) -> bool:
    try:
        enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cuda"))
    except EncoderError:
        return False
    return enc.provider == CUDA


@pytest.mark.gpu
def test_real_gpu_auto_selection(model_dir: Path) -> None:
    if not _cuda_really_loads(model_dir):
        pytest.skip("no CUDA provider loads on this machine")
    enc = OnnxTextEncoder(model_dir, OnnxEncoderConfig(engine_cache_dir=model_dir.parent / "trt-cache"))
    assert enc.provider in (TENSORRT, CUDA)
    ref = OnnxTextEncoder(model_dir, OnnxEncoderConfig(provider="cpu", variant="fp32"))
    texts = ["cheap running shoes", "Toy Story (1995)", "🎧 headphones"]
    assert np.min(np.sum(enc.encode(texts) * ref.encode(texts), axis=1)) > 0.97
