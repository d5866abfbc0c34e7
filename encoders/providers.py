"""Choosing an ONNX Runtime execution provider from what really loads.

Order of preference: TensorRT (QDQ static INT8 graph, engine cache) → CUDA (fp16 graph) → CPU (dynamic INT8
graph). ``onnxruntime-gpu`` *lists* CUDA and TensorRT in ``get_available_providers()`` even where their
libraries cannot load, and a session asked for CUDA then silently runs on CPU; so a candidate counts only when
the session it built reports that provider in ``session.get_providers()``.

Everything that touches onnxruntime is passed in (``available`` and ``session_factory``), so the choice is
unit-tested with fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from streamrec.encoders.errors import EncoderError, ProviderUnavailableError
from streamrec.encoders.manifest import CPU, CUDA, TENSORRT, Manifest, Variant

__all__ = [
    "PROVIDER_ORDER",
    "ProviderChoice",
    "ProviderName",
    "SessionFactory",
    "SessionLike",
    "open_candidate",
    "open_session",
    "plan_candidates",
]

logger = logging.getLogger(__name__)

ProviderName = Literal["auto", "tensorrt", "cuda", "cpu"]
PROVIDER_ORDER: tuple[str, ...] = (TENSORRT, CUDA, CPU)
_SHORT = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}


class SessionLike(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the encoder uses."""

    def get_providers(self) -> list[str]: ...

    def get_inputs(self) -> Sequence[Any]: ...

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> list[Any]: ...


# (model path, session options, providers with options) -> session
SessionFactory = Callable[[str, Any, list[Any]], SessionLike]


@dataclass(frozen=True)
class ProviderChoice:
    """A provider to try and the variant (graph) to run on it."""

    provider: str
    variant: Variant


def _fallbacks(manifest: Manifest, provider: str, first: Variant, others: bool) -> list[Variant]:
    """Variants to try on ``provider`` after ``first`` fails its self-check: the other variants made for that
    provider (``others``), then the fp32 graph (not on TensorRT, whose INT8 engine needs the QDQ graph)."""
    out = [
        v
        for v in manifest.variants.values()
        if others and v.provider == provider and v.name != first.name and v.precision != "fp32"
    ]
    if provider != TENSORRT:
        out += [v for v in manifest.variants.values() if v.precision == "fp32" and v.name != first.name]
    return out


def plan_candidates(
    manifest: Manifest,
    requested: ProviderName,
    available: Sequence[str],
    variant: str | None = None,
    *,
    fallbacks: bool = False,
) -> list[ProviderChoice]:
    """Candidates to try, best first.

    ``requested="auto"`` tries every provider in :data:`PROVIDER_ORDER` that ``available`` lists and the manifest
    has a variant for. A named provider gives exactly one candidate. ``variant`` forces which graph runs (for
    instance the fp16 graph on the CPU provider, to validate it without a GPU). ``fallbacks``: after each
    provider's variant, the variants to try on it when that one fails its self-check, ending with fp32
    (``cpu-int8`` → ``fp32`` on the CPU provider).
    """
    if requested != "auto" and requested not in _SHORT:
        raise EncoderError(f"unknown provider {requested!r}: use one of auto, tensorrt, cuda, cpu")
    if variant is not None and variant not in manifest.variants:
        raise EncoderError(f"unknown variant {variant!r}; this model has {sorted(manifest.variants)}")
    providers = PROVIDER_ORDER if requested == "auto" else (_SHORT[requested],)
    out: list[ProviderChoice] = []
    for provider in providers:
        if provider not in available:
            if requested != "auto":
                raise ProviderUnavailableError(
                    f"{provider} was requested but this onnxruntime build does not offer it "
                    f"(available: {list(available)}); use provider 'auto' or 'cpu'"
                )
            continue
        chosen = manifest.variants[variant] if variant is not None else manifest.variant_for(provider)
        if chosen is None:
            if requested != "auto":
                raise EncoderError(f"the model has no variant for {provider}; re-export it or choose another provider")
            continue
        out.append(ProviderChoice(provider, chosen))
        if fallbacks:
            out += [ProviderChoice(provider, v) for v in _fallbacks(manifest, provider, chosen, variant is None)]
    if not out:
        raise ProviderUnavailableError(f"no usable execution provider among {list(available)} for this model")
    return out


def _provider_list(provider: str, engine_cache_dir: Path | None) -> list[Any]:
    if provider == TENSORRT:
        opts: dict[str, Any] = {"trt_int8_enable": True, "trt_fp16_enable": True}
        if engine_cache_dir is not None:
            opts.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache_dir), trt_timing_cache_enable=True
            )
        return [(TENSORRT, opts), CUDA, CPU]
    if provider == CUDA:
        return [CUDA, CPU]
    return [CPU]


def open_candidate(
    model_dir: Path,
    choice: ProviderChoice,
    session_options: Callable[[], Any],
    session_factory: SessionFactory,
    *,
    engine_cache_dir: Path | None = None,
) -> SessionLike:
    """A session for ``choice`` that really runs on its provider, or :class:`ProviderUnavailableError`."""
    path = model_dir / choice.variant.file
    try:
        session = session_factory(str(path), session_options(), _provider_list(choice.provider, engine_cache_dir))
    except Exception as exc:  # onnxruntime raises plain RuntimeError/Fail for missing libraries
        raise ProviderUnavailableError(f"{choice.provider}: session failed: {exc}") from exc
    actual = list(session.get_providers())
    if choice.provider not in actual:
        raise ProviderUnavailableError(f"{choice.provider}: requested but the session runs on {actual}")
    return session


def open_session(
    model_dir: Path,
    candidates: Sequence[ProviderChoice],
    session_options: Callable[[], Any],
    session_factory: SessionFactory,
    *,
    engine_cache_dir: Path | None = None,
    strict: bool = False,
) -> tuple[SessionLike, ProviderChoice]:
    """Build a session for the first candidate whose provider really loads.

    A session that does not report its provider in ``get_providers()`` (onnxruntime fell back to CPU without
    saying so) is discarded. With ``strict`` the first failure raises :class:`ProviderUnavailableError`.
    """
    failures: list[str] = []
    for choice in candidates:
        try:
            session = open_candidate(
                model_dir, choice, session_options, session_factory, engine_cache_dir=engine_cache_dir
            )
        except ProviderUnavailableError as exc:
            reason = str(exc)
        else:
            logger.info(
                "encoder runs %s on %s (session providers %s)",
                choice.variant.name,
                choice.provider,
                session.get_providers(),
            )
            return session, choice
        failures.append(reason)
        if strict:
            raise ProviderUnavailableError(reason)
        logger.warning("%s; trying the next provider", reason)
    raise ProviderUnavailableError("no execution provider could run the model: " + "; ".join(failures))
