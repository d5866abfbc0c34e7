"""The seam every index implements: the :class:`VectorIndex` Protocol, its result types, errors and input checks.

Arrays: ``vectors``/``queries`` are ``float32[n, dim]`` (a single ``float32[dim]`` query is accepted by
``search``); returned vectors are ``float32[n, dim]``; scores are similarities (inner product; for the cosine
metric both sides are unit-normalised, so the score is the cosine), highest first.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamrec.errors import StreamrecError

Metric = Literal["cosine", "ip"]
METRICS: tuple[Metric, ...] = ("cosine", "ip")
FloatArray = npt.NDArray[np.float32]


class IndexStoreError(StreamrecError):
    """Base class of the errors raised by :mod:`streamrec.index`."""


class InvalidVectorError(IndexStoreError, ValueError):
    """A vector or query has the wrong shape, the wrong dimension, a NaN/inf, or (cosine) a zero norm."""


class InvalidItemIdError(IndexStoreError, ValueError):
    """An item id is not a non-empty ``str``."""


class UnknownItemError(IndexStoreError, KeyError):
    """``get`` was asked for ids the index does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SnapshotError(IndexStoreError):
    """A snapshot is missing, corrupt (checksum, truncated file, bad JSON) or does not match what the caller
    expects (kind, dimension, metric). The caller should discard it and rebuild the index from its source."""


@dataclass(frozen=True, slots=True)
class SearchHits:
    """The neighbours of one query, best first: ``ids[i]`` has similarity ``scores[i]`` (``float32[len(ids)]``)."""

    ids: tuple[str, ...]
    scores: FloatArray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    inserted: int
    updated: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    unknown: int


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Sizes and monotonically increasing counters; the streams layer turns them into metrics."""

    kind: str
    dim: int
    metric: Metric
    items: int  # live and available: what search can return
    unavailable: int  # live but marked unavailable (kept, not searchable)
    capacity: int  # allocated slots
    deleted_slots: int  # tombstoned slots waiting to be reused
    memory_bytes: int  # approximate size of the vector store / graph
    inserts_total: int
    updates_total: int
    deletes_total: int
    unknown_deletes_total: int
    resizes_total: int
    queries_total: int
    search_retries_total: int  # searches re-run with a larger ef/k because too few eligible came back
    exact_fallbacks_total: int  # searches answered by a brute-force scan as a last resort
    full_scans_total: int = 0  # queries answered by the small-catalogue full scan (HnswIndex full_scan_below)


@runtime_checkable
class VectorIndex(Protocol):
    """A mutable catalogue of item vectors answering top-k similarity queries. Safe for concurrent calls:
    searches run in parallel, writes (upsert/delete/set_available) and save are serialised."""

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> Metric: ...

    def __len__(self) -> int: ...  # live items, available or not

    def __contains__(self, item_id: object) -> bool: ...  # live, available or not

    def is_available(self, item_id: str) -> bool: ...  # live and available: search may return it

    def ids(self) -> list[str]: ...  # every live item id, available or not (a consistent copy)

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> UpsertResult: ...

    def delete(self, ids: Iterable[str]) -> DeleteResult: ...

    def set_available(self, ids: Iterable[str], available: bool) -> int: ...

    def get(self, ids: Sequence[str]) -> FloatArray: ...

    def search(
        self, queries: npt.ArrayLike, k: int, *, exclude: Sequence[Collection[str]] | None = None
    ) -> list[SearchHits]: ...

    def stats(self) -> IndexStats: ...

    def save(self, directory: Path | str, extra: dict[str, Any] | None = None) -> Path: ...


def check_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def as_matrix(data: npt.ArrayLike, dim: int, metric: Metric, *, what: str = "vectors") -> FloatArray:
    """Return ``data`` as a C-contiguous ``float32[n, dim]`` copy, unit-normalised for ``cosine``.

    Raises :class:`InvalidVectorError` on a wrong shape/dimension, non-finite values or (cosine) zero rows.
    """
    try:
        arr = np.array(data, dtype=np.float32, copy=True, order="C")
    except (TypeError, ValueError) as e:
        raise InvalidVectorError(f"{what} must be numeric float32[n, {dim}] data: {e}") from e
    if arr.ndim == 1 and what == "queries":
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidVectorError(f"{what} must have shape (n, {dim}); got {arr.shape}. Check the encoder's dimension.")
    if metric == "cosine" and arr.shape[0]:
        norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))  # NaN/inf rows give non-finite norms
        if not (np.isfinite(norms).all() and norms.min() >= 1e-12):
            _raise_bad_rows(arr, norms, what)
        arr /= norms[:, None]
    elif not np.isfinite(arr).all():
        _raise_bad_rows(arr, None, what)
    return arr


def _raise_bad_rows(arr: FloatArray, norms: FloatArray | None, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise InvalidVectorError(f"{what} rows {bad[:10].tolist()} contain NaN or inf; nothing was changed")
    assert norms is not None
    zero = np.flatnonzero(norms < 1e-12)
    raise InvalidVectorError(
        f"{what} rows {zero[:10].tolist()} have zero norm and no cosine direction; nothing was changed"
    )


def check_ids(ids: Iterable[str], *, what: str = "ids") -> list[str]:
    if isinstance(ids, str):
        raise InvalidItemIdError(f"{what} must be a sequence of str, not a single str {ids!r}")
    out = list(ids)
    for i in out:
        if not isinstance(i, str) or not i:
            raise InvalidItemIdError(f"{what} must be non-empty str; got {i!r}")
    return out


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def check_exclude(exclude: Sequence[Collection[str]] | None, n: int) -> Sequence[Collection[str]] | None:
    if exclude is None:
        return None
    if isinstance(exclude, str) or len(exclude) != n:
        raise ValueError(f"exclude must hold one collection of ids per query ({n}), got {type(exclude).__name__}")
    for e in exclude:
        if isinstance(e, str):
            raise ValueError("exclude entries must be collections of ids, not a str (wrap it: {'id'})")
    return exclude


def last_wins(ids: list[str], vectors: FloatArray) -> tuple[list[str], FloatArray]:
    """Deduplicate a batch, keeping each id's last vector (the latest catalogue event wins)."""
    if len(set(ids)) == len(ids):
        return ids, vectors
    last = {item: pos for pos, item in enumerate(ids)}
    keep = sorted(last.values())
    return [ids[p] for p in keep], vectors[keep]


def scaled_ef(ef: int, k: int) -> int:
    """The search breadth for ``k`` results: ``ef`` is tuned for k = 10 and scales linearly with k."""
    return max(ef, k, math.ceil(ef * k / 10))
