"""ONNX Runtime text encoder: tokenize (Rust ``tokenizers``), run the graph, pool, L2-normalise.

No torch, no transformers modelling code: a worker needs only ``onnxruntime``, ``tokenizers`` and ``numpy``.

Per call, texts are tokenized once (truncated at the manifest's ``max_seq_length``), sorted by token length,
cut into chunks of at most ``max_batch_size`` and each chunk is padded to its own longest text; results are put
back in the caller's order. Pooling (``mean``/``cls``/``max`` over real tokens) and normalisation happen here.

At load time each candidate variant is self-checked on the machine that will run it (:mod:`.selfcheck`): the
manifest's reference texts are embedded and compared with their fp32 embeddings against the thresholds the
variant passed at export. A variant that fails is not served: a WARNING names it, the cosine and the CPU, and
the next candidate is tried (``cpu-int8`` → ``fp32``); ``self_check="strict"`` raises instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from streamrec.encoders._base import check_texts
from streamrec.encoders.errors import EncoderError, ProviderUnavailableError
from streamrec.encoders.manifest import CPU, Manifest, Variant, load_manifest
from streamrec.encoders.providers import (
    ProviderChoice,
    ProviderName,
    SessionFactory,
    SessionLike,
    open_candidate,
    plan_candidates,
)
from streamrec.encoders.selfcheck import (
    ReferenceSet,
    SelfCheckError,
    SelfCheckResult,
    load_reference_set,
    score_self_check,
)
from streamrec.machine import cpu_info

__all__ = ["EncoderStats", "OnnxEncoderConfig", "OnnxTextEncoder", "Selection", "SelfCheckMode", "pool_and_normalize"]

logger = logging.getLogger(__name__)

CPU_MAX_BATCH = 8
GPU_MAX_BATCH = 64

# fallback: a variant that fails its load-time self-check is skipped for the next one (ending with fp32);
# strict: that is an error; off: no check (the export's own validation, benchmarks that score variants).
SelfCheckMode = Literal["fallback", "strict", "off"]


@dataclass(frozen=True)
class OnnxEncoderConfig:
    """How to run an exported model.

    ``provider``: ``auto`` (TensorRT → CUDA → CPU, whichever really loads) or one of ``tensorrt``, ``cuda``,
    ``cpu`` (then a provider that does not load is an error). ``variant`` forces a graph from the manifest.
    ``intra_op_threads`` ≥ 1; spinning is switched off when it is > 1 (spinning threads triple latency on a
    loaded machine). ``max_batch_size``: texts per inference; a call's texts are sorted by length and cut into
    chunks of this size, each padded to its own longest (default: 8 on CPU, where small length-sorted chunks
    waste least on padding and measured fastest, 64 on GPUs). ``engine_cache_dir``: where TensorRT keeps built
    engines. ``verify``: check the sha256 of the files used against the manifest before loading.
    ``self_check``: see :data:`SelfCheckMode` and the module docstring.
    """

    provider: ProviderName = "auto"
    variant: str | None = None
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_batch_size: int | None = None
    engine_cache_dir: Path | None = None
    verify: bool = True
    self_check: SelfCheckMode = "fallback"

    def __post_init__(self) -> None:
        if self.self_check not in ("fallback", "strict", "off"):
            raise EncoderError(f"unknown self_check mode {self.self_check!r}: use fallback, strict or off")
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise EncoderError("thread counts must be >= 1")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise EncoderError("max_batch_size must be >= 1")


@dataclass
class EncoderStats:
    """Counters for the streams layer to export as metrics (plain numbers, no metrics library here)."""

    provider: str = ""
    variant: str = ""
    calls: int = 0
    texts: int = 0
    batches: int = 0
    tokens: int = 0
    truncated: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024), repr=False)  # recent


@dataclass(frozen=True)
class Selection:
    """Which variant the encoder serves and why.

    ``first``: the variant it would have served had every self-check passed (the first candidate whose provider
    really loads); ``self_check``: the served variant's result (``None`` when the check is off); ``rejected``:
    one line per variant that failed its self-check, in order; ``checked``: every self-check run;
    ``unavailable``: providers passed over because they do not load here (the everyday case of onnxruntime-gpu
    on a machine without a GPU, so not a fallback of the model).
    """

    provider: str
    variant: str
    first: str
    self_check: SelfCheckResult | None
    rejected: tuple[str, ...] = ()
    checked: tuple[SelfCheckResult, ...] = ()
    unavailable: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        return self.variant != self.first

    @property
    def check_state(self) -> str:
        """``passed``, ``fallback`` (an earlier variant failed, this one passed) or ``off``."""
        if self.self_check is None:
            return "off"
        return "fallback" if any(not c.passed for c in self.checked) else "passed"

    def reason(self) -> str:
        return "; ".join(self.rejected)


def pool_and_normalize(
    hidden: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.int64], pooling: str
) -> npt.NDArray[np.float32]:
    """``hidden`` (n, seq, d), ``mask`` (n, seq) → (n, d) float32 unit rows."""
    h = hidden.astype(np.float32, copy=False)
    if pooling == "cls":
        v = h[:, 0, :]
    elif pooling == "max":
        v = np.where(mask[:, :, None] > 0, h, np.float32(-1e9)).max(axis=1)
    else:
        m = mask.astype(np.float32)
        v = np.einsum("nsd,ns->nd", h, m) / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def _default_available() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _default_factory(path: str, options: Any, providers: list[Any]) -> SessionLike:
    import onnxruntime as ort

    session: SessionLike = ort.InferenceSession(path, sess_options=options, providers=providers)
    return session


class OnnxTextEncoder:
    """A :class:`~streamrec.encoders.TextEncoder` over a directory written by ``streamrec export``.

    ``available_providers`` and ``session_factory`` default to onnxruntime's; tests pass fakes. ``encode`` is
    safe to call from several threads (one inference at a time per encoder; give each worker thread its own
    encoder to run them in parallel).
    """

    def __init__(
        self,
        model_dir: Path | str,
        config: OnnxEncoderConfig | None = None,
        *,
        available_providers: Callable[[], Sequence[str]] = _default_available,
        session_factory: SessionFactory = _default_factory,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.config = config or OnnxEncoderConfig()
        self.manifest: Manifest = load_manifest(self.model_dir)
        checking = self.config.self_check != "off"
        candidates = plan_candidates(
            self.manifest, self.config.provider, list(available_providers()), self.config.variant, fallbacks=checking
        )
        if self.config.verify:
            self.manifest.verify(self.model_dir, [self.manifest.tokenizer])
            if checking:
                self.manifest.verify(self.model_dir, [str(self.manifest.self_check["file"])])
        self._tokenizer = self._load_tokenizer()
        reference = load_reference_set(self.model_dir, self.manifest) if checking else None
        self._lock = threading.Lock()
        self._session, choice, self.selection = self._choose(candidates, reference, session_factory)
        self.provider: str = choice.provider
        self.variant: Variant = choice.variant
        self._inputs = self._input_names(self._session)
        self.stats = EncoderStats(provider=self.provider, variant=self.variant.name)
        self.max_batch_size = self._batch_size_for(self.provider)

    def _batch_size_for(self, provider: str) -> int:
        return self.config.max_batch_size or (CPU_MAX_BATCH if provider == CPU else GPU_MAX_BATCH)

    @staticmethod
    def _input_names(session: SessionLike) -> list[str]:
        names = {i.name for i in session.get_inputs()}
        return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]

    def _choose(
        self, candidates: Sequence[ProviderChoice], reference: ReferenceSet | None, session_factory: SessionFactory
    ) -> tuple[SessionLike, ProviderChoice, Selection]:
        """The first candidate whose provider really loads and whose variant passes its self-check."""
        strict_provider = self.config.provider != "auto"
        dead_providers: set[str] = set()
        rejected: list[str] = []
        unavailable: list[str] = []
        checked: list[SelfCheckResult] = []
        first: str | None = None
        for choice in candidates:
            if choice.provider in dead_providers:
                continue
            if self.config.verify:
                self.manifest.verify(self.model_dir, [choice.variant.file])
            try:
                session = open_candidate(
                    self.model_dir,
                    choice,
                    self._session_options,
                    session_factory,
                    engine_cache_dir=self.config.engine_cache_dir,
                )
            except ProviderUnavailableError as exc:
                if strict_provider:
                    raise
                dead_providers.add(choice.provider)
                unavailable.append(str(exc))
                logger.warning("%s; trying the next provider", exc)
                continue
            first = first or choice.variant.name
            result = None if reference is None else self._self_check(session, choice, reference)
            if result is not None:
                checked.append(result)
                if not result.passed:
                    where = cpu_info().describe() if choice.provider == CPU else choice.provider
                    msg = (
                        f"variant {choice.variant.name} fails its self-check on this machine: "
                        f"{result.describe()}; CPU: {where}"
                    )
                    if self.config.self_check == "strict":
                        raise SelfCheckError(
                            f"{msg}. Refusing to serve it (strict self-check): re-export the model on a machine "
                            "like this one, or let the encoder fall back (self-check mode 'fallback')"
                        )
                    rejected.append(f"{choice.variant.name}: " + "; ".join(result.failures))
                    logger.warning("%s; not serving it, trying the next variant", msg)
                    continue
                logger.info("%s", result.describe())
            logger.info(
                "encoder runs %s on %s (session providers %s)",
                choice.variant.name,
                choice.provider,
                session.get_providers(),
            )
            selection = Selection(
                choice.provider, choice.variant.name, first, result, tuple(rejected), tuple(checked), tuple(unavailable)
            )
            if selection.fell_back:
                logger.warning(
                    "encoder serves %s instead of %s: %s", choice.variant.name, selection.first, selection.reason()
                )
            return session, choice, selection
        if checked and not any(c.passed for c in checked):
            raise SelfCheckError(
                "no variant of the model passes its self-check on this machine: "
                + " | ".join(c.describe() for c in checked)
                + ". The model files match their checksums, so suspect this machine's "
                "onnxruntime build; re-export the model here"
            )
        raise ProviderUnavailableError("no execution provider could run the model: " + "; ".join(unavailable))

    def _self_check(
        self,
        session: SessionLike,
        choice: ProviderChoice,
        ref: ReferenceSet,
        thresholds: Mapping[str, float] | None = None,
    ) -> SelfCheckResult:
        """The reference set's batches, each as one inference (they are batches of the export's validation run:
        dynamic INT8 quantizes activations per batch, so the batch is part of what is checked)."""
        t0 = time.perf_counter()
        encodings = self._tokenizer.encode_batch(list(ref.texts))
        inputs, where = self._input_names(session), f"{choice.provider} ({choice.variant.name})"
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for part in ref.slices():
            batch = encodings[part]
            out[part] = self._embed(session, inputs, batch, max(1, len(batch)), where)
        return score_self_check(choice.variant, choice.provider, out, ref, time.perf_counter() - t0, thresholds)

    def run_self_check(self, thresholds: Mapping[str, float] | None = None) -> SelfCheckResult:
        """Self-check the variant in use now (``thresholds``: instead of the ones in the manifest)."""
        ref = load_reference_set(self.model_dir, self.manifest)
        with self._lock:
            return self._self_check(self._session, ProviderChoice(self.provider, self.variant), ref, thresholds)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def name(self) -> str:
        return f"{self.manifest.name}:{self.variant.name}"

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.config.intra_op_threads
        so.inter_op_num_threads = self.config.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.config.intra_op_threads > 1:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.config.inter_op_threads > 1:
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def _load_tokenizer(self) -> Tokenizer:
        path = self.model_dir / self.manifest.tokenizer
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise EncoderError(f"cannot load tokenizer {path}: {exc}") from exc
        tok.no_padding()
        tok.enable_truncation(max_length=self.manifest.max_seq_length)
        return tok

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with special tokens, truncated at ``max_seq_length``)."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(items)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        with self._lock:
            self.stats.calls += 1
            self.stats.texts += len(items)
            self.stats.tokens += int(lengths.sum())
            self.stats.truncated += sum(1 for e in encodings if e.overflowing)
            return self._embed(
                self._session,
                self._inputs,
                encodings,
                self.max_batch_size,
                f"{self.provider} ({self.variant.name})",
                self.stats,
            )

    def _embed(
        self,
        session: SessionLike,
        inputs: list[str],
        encodings: Sequence[Any],
        bs: int,
        where: str,
        stats: EncoderStats | None = None,
    ) -> npt.NDArray[np.float32]:
        """Length-sorted chunks of ``bs``, each padded to its own longest; rows in the caller's order."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for start in range(0, len(encodings), bs):
            idx = order[start : start + bs]
            out[idx] = self._run_chunk(session, inputs, where, [encodings[i].ids for i in idx], int(lengths[idx].max()))
            if stats is not None:
                stats.batches += 1
                stats.batch_sizes.append(len(idx))
        return out

    def _run_chunk(
        self, session: SessionLike, inputs: list[str], where: str, ids: list[list[int]], width: int
    ) -> npt.NDArray[np.float32]:
        n = len(ids)
        input_ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        try:
            hidden = session.run([self.manifest.output], {k: feed[k] for k in inputs})[0]
        except Exception as exc:
            raise EncoderError(f"inference failed on {where}: {exc}") from exc
        hidden = np.asarray(hidden)
        if hidden.ndim != 3 or hidden.shape[0] != n or hidden.shape[2] != self.dim:
            raise EncoderError(f"model output has shape {hidden.shape}, expected ({n}, seq, {self.dim})")
        return pool_and_normalize(hidden, mask, self.manifest.pooling)

    def __repr__(self) -> str:
        return f"OnnxTextEncoder({str(self.model_dir)!r}, variant={self.variant.name!r}, provider={self.provider!r})"
