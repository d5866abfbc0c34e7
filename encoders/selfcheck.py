"""Load-time self-check: does this variant, on this machine, still embed like the fp32 model it came from?

A quantized graph's numbers depend on the CPU that runs it (dynamic INT8 saturates on AVX2 CPUs without
VNNI; see :mod:`streamrec.machine`), so an export validated on one machine proves little about another. The
export writes a small reference set -- a few dozen held-out texts and their PyTorch fp32 embeddings, hashed in
the manifest like every other file -- and the encoder embeds those texts with the variant it is about to serve
and compares them against the thresholds that variant passed at export time.

The texts are whole batches of the export's own validation run (6 of its length-sorted chunks of 8, spread
over the length range), and the check runs them as those same batches. Dynamic INT8 quantizes activations
per batch, and the AVX2 saturation shows in padded batches: under an emulated AVX2-only CPU the pre-fix
recipe scored cosine 0.9964 with each text alone, but 0.983 (min 0.928) in these batches, like the 0.9846 of
the full validation. Replaying validation batches also means a healthy machine gets the numbers the export
measured, so the variant's thresholds apply as they did at export.

Only the per-text cosine thresholds (mean and min) are checked here: the top-10 neighbour overlap is a
statistic of the whole 300-text validation set and is too coarse on a few dozen texts to decide anything.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.encoders.errors import EncoderError, ModelIntegrityError
from streamrec.encoders.manifest import Manifest, Variant

__all__ = [
    "SELF_CHECK_BATCHES",
    "SELF_CHECK_FILE",
    "ReferenceSet",
    "SelfCheckError",
    "SelfCheckResult",
    "load_reference_set",
    "pick_batches",
    "score_self_check",
    "write_reference_set",
]

SELF_CHECK_FILE = "selfcheck.json"
SELF_CHECK_BATCHES = 6  # of the validation run's chunks (8 texts each on the CPU provider): 48 texts
CHECKED = ("cos_mean", "cos_min")


class SelfCheckError(EncoderError):
    """A variant failed its load-time self-check and the encoder was told not to fall back (strict mode)."""


@dataclass(frozen=True)
class ReferenceSet:
    """``texts`` and their fp32 reference ``embeddings`` (n, dim), unit rows, row-aligned; ``batches``: the
    sizes of the consecutive slices of ``texts`` to run as one inference each."""

    texts: tuple[str, ...]
    embeddings: npt.NDArray[np.float32]
    reference: str = ""
    batches: tuple[int, ...] = ()

    def slices(self) -> list[slice]:
        sizes = self.batches or (len(self.texts),)
        starts = np.cumsum((0, *sizes))
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(starts)]


@dataclass(frozen=True)
class SelfCheckResult:
    """One variant's self-check on this machine. ``failures`` is empty when it passed."""

    variant: str
    provider: str
    cos_mean: float
    cos_min: float
    n_texts: int
    seconds: float
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED (" + "; ".join(self.failures) + ")"
        return (
            f"self-check {self.variant} on {self.provider}: cosine vs fp32 mean {self.cos_mean:.4f} "
            f"min {self.cos_min:.4f} on {self.n_texts} texts in {self.seconds * 1000:.0f} ms: {verdict}"
        )


def pick_batches(lengths: Sequence[int], batch_size: int, n_batches: int = SELF_CHECK_BATCHES) -> list[list[int]]:
    """The chunks the runtime cuts from texts of these token ``lengths`` (stable sort by length, ``batch_size``
    per chunk), ``n_batches`` full ones spread evenly from the shortest to the longest: indices per chunk."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    full = [order[i : i + batch_size].tolist() for i in range(0, len(order) - batch_size + 1, batch_size)]
    if len(full) <= n_batches:
        return full
    picks = sorted({round(i * (len(full) - 1) / (n_batches - 1)) for i in range(n_batches)})
    return [full[i] for i in picks]


def write_reference_set(
    model_dir: Path,
    texts: Sequence[str],
    embeddings: npt.NDArray[np.float32],
    reference: str,
    batches: Sequence[int] = (),
) -> dict[str, Any]:
    """Write :data:`SELF_CHECK_FILE` into ``model_dir``; return the manifest's ``self_check`` block."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts) or not texts:
        raise EncoderError(f"reference set: {len(texts)} texts but embeddings of shape {emb.shape}")
    sizes = [int(b) for b in batches] or [len(texts)]
    if sum(sizes) != len(texts) or min(sizes) < 1:
        raise EncoderError(f"reference set: batches {sizes} do not cover its {len(texts)} texts")
    data = {
        "reference": reference,
        "dim": int(emb.shape[1]),
        "batches": sizes,
        "texts": list(texts),
        "embeddings": [[float(x) for x in row] for row in emb],
    }
    (model_dir / SELF_CHECK_FILE).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    return {
        "file": SELF_CHECK_FILE,
        "n_texts": len(texts),
        "batches": sizes,
        "reference": reference,
        "checks": list(CHECKED),
    }


def load_reference_set(model_dir: Path, manifest: Manifest) -> ReferenceSet:
    """Read the manifest's reference set (call ``manifest.verify`` on its file first to check its sha256)."""
    path = Path(model_dir) / str(manifest.self_check.get("file", SELF_CHECK_FILE))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        texts = tuple(str(t) for t in data["texts"])
        emb = np.asarray(data["embeddings"], dtype=np.float32)
        batches = tuple(int(b) for b in data.get("batches") or (len(texts),))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(
            f"cannot read the self-check reference set {path}: {exc!r}; re-run `streamrec export --overwrite`"
        ) from exc
    if emb.ndim != 2 or emb.shape != (len(texts), manifest.dim) or len(texts) < 2:
        raise ModelIntegrityError(
            f"{path}: {len(texts)} texts with embeddings of shape {emb.shape}, expected "
            f"({len(texts)}, {manifest.dim}); re-run `streamrec export --overwrite`"
        )
    if sum(batches) != len(texts) or min(batches) < 1:
        raise ModelIntegrityError(f"{path}: batches {list(batches)} do not cover its {len(texts)} texts")
    return ReferenceSet(texts, emb, str(data.get("reference", "")), batches)


def thresholds_of(variant: Variant) -> dict[str, float]:
    """The cosine thresholds ``variant`` passed at export (``{}`` when the manifest records none)."""
    t = variant.validation.get("thresholds") or {}
    return {k: float(t[k]) for k in CHECKED if k in t}


def score_self_check(
    variant: Variant,
    provider: str,
    candidate: npt.NDArray[np.float32],
    ref: ReferenceSet,
    seconds: float,
    thresholds: Mapping[str, float] | None = None,
) -> SelfCheckResult:
    """Compare ``candidate`` (the variant's embeddings of ``ref.texts``) with the reference."""
    if candidate.shape != ref.embeddings.shape:
        raise EncoderError(f"self-check: embeddings of shape {candidate.shape}, reference {ref.embeddings.shape}")
    cos = np.einsum("nd,nd->n", candidate.astype(np.float64), ref.embeddings.astype(np.float64))
    mean, low = float(cos.mean()), float(cos.min())
    t = thresholds_of(variant) if thresholds is None else dict(thresholds)
    failures: list[str] = []
    if not t:
        failures.append("the manifest records no thresholds for this variant")
    if not (math.isfinite(mean) and math.isfinite(low)):
        failures.append("non-finite embeddings")
    if "cos_mean" in t and not mean >= t["cos_mean"]:
        failures.append(f"cosine mean {mean:.4f} < {t['cos_mean']}")
    if "cos_min" in t and not low >= t["cos_min"]:
        failures.append(f"cosine min {low:.4f} < {t['cos_min']}")
    return SelfCheckResult(variant.name, provider, mean, low, len(ref.texts), seconds, tuple(failures))
