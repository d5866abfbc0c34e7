"""ONNX Runtime text encoder: tokenize (Rust ``tokenizers``), run the graph, pool, L2-normalise.

No torch, no transformers modelling code: a worker needs only ``onnxruntime``, ``tokenizers`` and ``numpy``.

Per call, texts are tokenized once (truncated at the manifest's ``max_seq_length``), sorted by token length,
cut into chunks of at most ``max_batch_size`` and each chunk is padded to its own longest text; results are put
back in the caller's order. Pooling (``mean``/``cls``/``max`` over real tokens) and normalisation happen here.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from streamrec.encoders._base import check_texts
from streamrec.encoders.errors import EncoderError
from streamrec.encoders.manifest import Manifest, Variant, load_manifest
from streamrec.encoders.providers import (
    ProviderName,
    SessionFactory,
    SessionLike,
    open_session,
    plan_candidates,
)

__all__ = ["EncoderStats", "OnnxEncoderConfig", "OnnxTextEncoder", "pool_and_normalize"]

logger = logging.getLogger(__name__)

CPU_MAX_BATCH = 8
GPU_MAX_BATCH = 64


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
    """

    provider: ProviderName = "auto"
    variant: str | None = None
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_batch_size: int | None = None
    engine_cache_dir: Path | None = None
    verify: bool = True

    def __post_init__(self) -> None:
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
        candidates = plan_candidates(self.manifest, self.config.provider, list(available_providers()),
                                     self.config.variant)
        if self.config.verify:
            self.manifest.verify(self.model_dir, [self.manifest.tokenizer])
            for c in candidates:
                self.manifest.verify(self.model_dir, [c.variant.file])
        self._tokenizer = self._load_tokenizer()
        self._session, choice = open_session(
            self.model_dir,
            candidates,
            self._session_options,
            session_factory,
            engine_cache_dir=self.config.engine_cache_dir,
            strict=self.config.provider != "auto",
        )
        self.provider: str = choice.provider
        self.variant: Variant = choice.variant
        names = {i.name for i in self._session.get_inputs()}
        self._inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
        self.stats = EncoderStats(provider=self.provider, variant=self.variant.name)
        self.max_batch_size = self.config.max_batch_size or (
            CPU_MAX_BATCH if self.provider == "CPUExecutionProvider" else GPU_MAX_BATCH)
        self._lock = threading.Lock()

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
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        encodings = self._tokenizer.encode_batch(items)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        bs = self.max_batch_size
        with self._lock:
            self.stats.calls += 1
            self.stats.texts += len(items)
            self.stats.tokens += int(lengths.sum())
            self.stats.truncated += sum(1 for e in encodings if e.overflowing)
            for start in range(0, len(items), bs):
                idx = order[start:start + bs]
                out[idx] = self._run_chunk([encodings[i].ids for i in idx], int(lengths[idx].max()))
                self.stats.batches += 1
                self.stats.batch_sizes.append(len(idx))
        return out

    def _run_chunk(self, ids: list[list[int]], width: int) -> npt.NDArray[np.float32]:
        n = len(ids)
        input_ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        try:
            hidden = self._session.run([self.manifest.output], {k: feed[k] for k in self._inputs})[0]
        except Exception as exc:
            raise EncoderError(f"inference failed on {self.provider} ({self.variant.name}): {exc}") from exc
        hidden = np.asarray(hidden)
        if hidden.ndim != 3 or hidden.shape[0] != n or hidden.shape[2] != self.dim:
            raise EncoderError(f"model output has shape {hidden.shape}, expected ({n}, seq, {self.dim})")
        return pool_and_normalize(hidden, mask, self.manifest.pooling)

    def __repr__(self) -> str:
        return f"OnnxTextEncoder({str(self.model_dir)!r}, variant={self.variant.name!r}, provider={self.provider!r})"
