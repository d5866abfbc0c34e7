"""Scores of a variant against the fp32 reference: cosine per text and top-10 neighbour overlap."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.export.errors import ExportError

__all__ = ["Scores", "Thresholds", "score", "top_k_neighbours"]


@dataclass(frozen=True)
class Thresholds:
    cos_mean: float
    cos_min: float
    top10_overlap: float

    def failures(self, s: Scores) -> list[str]:
        out = []
        if s.cos_mean < self.cos_mean:
            out.append(f"cosine mean {s.cos_mean:.4f} < {self.cos_mean}")
        if s.cos_min < self.cos_min:
            out.append(f"cosine min {s.cos_min:.4f} < {self.cos_min}")
        if s.top10_overlap < self.top10_overlap:
            out.append(f"top-10 overlap {s.top10_overlap:.3f} < {self.top10_overlap}")
        return out


@dataclass(frozen=True)
class Scores:
    cos_mean: float
    cos_min: float
    top10_overlap: float
    n_texts: int

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def top_k_neighbours(emb: npt.NDArray[np.float32], k: int = 10) -> npt.NDArray[np.intp]:
    """Indices of each row's ``k`` nearest other rows by cosine (rows are unit vectors)."""
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, emb.shape[0] - 1)
    part = np.argpartition(-sims, k, axis=1)[:, :k]
    return part


def score(candidate: npt.NDArray[np.float32], reference: npt.NDArray[np.float32], k: int = 10) -> Scores:
    """Compare row-aligned unit embeddings (n, d); ``n`` must exceed ``k``."""
    if candidate.shape != reference.shape or candidate.ndim != 2:
        raise ExportError(f"cannot compare embeddings of shapes {candidate.shape} and {reference.shape}")
    if candidate.shape[0] <= k:
        raise ExportError(f"validation needs more than {k} texts, got {candidate.shape[0]}")
    cos = np.einsum("nd,nd->n", candidate.astype(np.float64), reference.astype(np.float64))
    a, b = top_k_neighbours(candidate, k), top_k_neighbours(reference, k)
    overlap = np.mean([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b, strict=True)])
    return Scores(float(cos.mean()), float(cos.min()), float(overlap), int(candidate.shape[0]))
