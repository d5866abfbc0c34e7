"""The PyTorch fp32 reference every exported variant is validated against (export time only: imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.encoders._base import check_texts
from streamrec.encoders.onnx import pool_and_normalize
from streamrec.export.errors import ExportError

__all__ = ["TorchReferenceEncoder"]


class TorchReferenceEncoder:
    """``transformers.AutoModel`` in fp32 + the same tokenizer, pooling and normalisation as the runtime.

    This is what sentence-transformers computes for a Transformer → Pooling → Normalize model.
    """

    def __init__(
        self, source_dir: Path, tokenizer_file: Path, *, pooling: str, max_seq_length: int, batch_size: int = 32
    ) -> None:
        try:
            import torch
            from tokenizers import Tokenizer
            from transformers import AutoModel
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ExportError(f"the export needs torch and transformers ({exc}); install streamrec[export]") from exc
        self._torch: Any = torch
        self.model: Any = AutoModel.from_pretrained(str(source_dir), local_files_only=True).eval()
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.pooling = pooling
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self.name = f"torch-fp32:{Path(source_dir).name}"
        self._wants_token_types = "token_type_ids" in self.model.forward.__code__.co_varnames

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        torch = self._torch
        for start in range(0, len(items), self.batch_size):
            enc = self.tokenizer.encode_batch(items[start : start + self.batch_size])
            width = max(len(e.ids) for e in enc)
            ids = np.zeros((len(enc), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for i, e in enumerate(enc):
                ids[i, : len(e.ids)] = e.ids
                mask[i, : len(e.ids)] = 1
            kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if self._wants_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
            with torch.inference_mode():
                hidden = self.model(**kwargs).last_hidden_state.float().numpy()
            out[start : start + len(enc)] = pool_and_normalize(hidden, mask, self.pooling)
        return out
