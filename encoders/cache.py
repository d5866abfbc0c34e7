"""A bounded LRU of embeddings keyed by the exact text, and a :class:`CachedEncoder` that uses it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamrec.encoders._base import TextEncoder, check_texts
from streamrec.encoders.errors import EncoderError

__all__ = ["CacheStats", "CachedEncoder", "EmbeddingCache"]


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    size: int
    capacity: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EmbeddingCache:
    """Thread-safe LRU: ``text -> float32[dim]`` (stored read-only), at most ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise EncoderError("cache capacity must be >= 1")
        self.capacity = capacity
        self._data: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, text: str) -> npt.NDArray[np.float32] | None:
        """The cached vector (counts a hit) or ``None`` (counts a miss)."""
        with self._lock:
            vec = self._data.get(text)
            if vec is None:
                self._misses += 1
                return None
            self._data.move_to_end(text)
            self._hits += 1
            return vec

    def put(self, text: str, vector: npt.NDArray[np.float32]) -> None:
        vec = np.array(vector, dtype=np.float32, copy=True)
        vec.setflags(write=False)
        with self._lock:
            self._data[text] = vec
            self._data.move_to_end(text)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
                self._evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, text: object) -> bool:
        return text in self._data

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._data), self.capacity)


class CachedEncoder:
    """Wraps a :class:`TextEncoder`; encodes only the texts not in the cache (each distinct text once per call)."""

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | None = None, capacity: int = 100_000) -> None:
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache(capacity)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(items):
            if text in missing:  # a repeat within this call: encoded once
                missing[text].append(i)
                continue
            vec = self.cache.get(text)
            if vec is None:
                missing[text] = [i]
            else:
                out[i] = vec
        if missing:
            todo = list(missing)
            vectors = self.encoder.encode(todo)
            for text, vec in zip(todo, vectors, strict=True):
                self.cache.put(text, vec)
                out[missing[text]] = vec
        return out
