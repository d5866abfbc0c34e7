"""The recommender core (:mod:`streamrec.streams.core`) as an evaluation candidate, built like the worker.

The catalogue is embedded once (``item_text`` of every item, the worker's encoder and model) and each candidate
gets its OWN index filled from those vectors, its own popularity, co-visitation graph and session states, so no
candidate sees what another learned. The core is driven as its docstring says for offline use: one ``step`` per
micro-batch, then ``learn`` (the co-visitation graph takes the batch's deltas after the batch answered -- the
worker's graph gets them later still, through Kafka).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from streamrec.encoders import CachedEncoder, EmbeddingCache, OnnxTextEncoder, TextEncoder
from streamrec.errors import ConfigError
from streamrec.index import HnswIndex
from streamrec.streams.catalog import item_text
from streamrec.streams.core import RecommenderCore
from streamrec.streams.covisit import CovisitGraph
from streamrec.streams.evaluation.data import EventLog
from streamrec.streams.evaluation.suite import Candidate
from streamrec.streams.schemas import Event
from streamrec.streams.session import STRATEGIES, SessionConfig, SessionState
from streamrec.streams.settings import WorkerSettings

__all__ = [
    "CoreRecommender",
    "EmbeddedCatalogue",
    "build_core",
    "core_candidates",
    "embed_catalogue",
    "parse_variant",
    "session_config",
    "variant_settings",
]

log = logging.getLogger(__name__)


class CoreRecommender:
    """Drives one :class:`RecommenderCore` over a log: step, learn, keep the states."""

    def __init__(self, core: RecommenderCore) -> None:
        self.core = core
        self.states: dict[str, SessionState] = {}

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        result = self.core.step(batch, {e.user_id: self.states.get(e.user_id) for e in batch})
        self.core.learn(result)
        self.states.update(result.states)
        return [[item for item, _ in outcome.items] for outcome in result.outcomes]


@dataclass(frozen=True)
class EmbeddedCatalogue:
    encoder: TextEncoder  # the model, uncached
    ids: list[str]
    vectors: npt.NDArray[np.float32]
    unavailable: list[str]
    titles: dict[str, str]
    seconds: float


def _encoder(settings: WorkerSettings) -> OnnxTextEncoder:
    from streamrec.commands.export import default_model_dir
    from streamrec.streams.worker import load_encoder

    return load_encoder(settings, settings.model_dir or default_model_dir())  # exactly as the worker loads it


def embed_catalogue(log_: EventLog, settings: WorkerSettings, *, chunk: int = 256) -> EmbeddedCatalogue:
    """Every item's text embedded once with the worker's encoder (its model, provider, threads)."""
    raw = _encoder(settings)
    t = time.perf_counter()
    items = [i for i in log_.items if i.title]
    texts = [item_text(i) for i in items]
    vectors = (
        np.concatenate([raw.encode(texts[s : s + chunk]) for s in range(0, len(texts), chunk)])
        if texts
        else np.empty((0, raw.dim), np.float32)
    )
    return EmbeddedCatalogue(
        raw,
        [i.item_id for i in items],
        vectors.astype(np.float32, copy=False),
        [i.item_id for i in items if not i.available],
        {i.item_id: i.title for i in items},
        time.perf_counter() - t,
    )


def _cached(encoder: TextEncoder, settings: WorkerSettings) -> TextEncoder:
    """The worker's embedding cache in front of the shared model: a fresh one per candidate, so no candidate's
    cost (or INT8 batch-mates) depends on another's run."""
    if settings.encoder_cache_size <= 0:
        return encoder
    return CachedEncoder(encoder, cache=EmbeddingCache(settings.encoder_cache_size))


def _index(settings: WorkerSettings, catalogue: EmbeddedCatalogue) -> HnswIndex:
    index = HnswIndex(
        catalogue.encoder.dim,
        m=settings.index_m,
        ef_construction=settings.index_ef_construction,
        ef=settings.index_ef,
        full_scan_below=settings.index_full_scan_below,
    )
    if catalogue.ids:
        index.upsert(catalogue.ids, catalogue.vectors)
    if catalogue.unavailable:
        index.set_available(catalogue.unavailable, False)
    return index


def session_config(settings: WorkerSettings) -> SessionConfig:
    """The session configuration a worker with ``settings`` runs (its consumed types are the baselines' too)."""
    from streamrec.streams.worker import session_config as worker_session_config

    return worker_session_config(settings)


def build_core(settings: WorkerSettings, strategy: str, catalogue: EmbeddedCatalogue, *, k: int) -> RecommenderCore:
    """A fresh core configured as ``StreamWorker`` configures its own from ``settings`` (the same function), with
    ``strategy``, over its own index, embedding cache and co-visitation graph."""
    from streamrec.streams.worker import core_from_settings, covisit_config

    return core_from_settings(
        settings,
        encoder=_cached(catalogue.encoder, settings),
        index=_index(settings, catalogue),
        titles=catalogue.titles,
        covisit=CovisitGraph(covisit_config(settings)) if settings.covisit else None,
        strategy=strategy,
        k=k,
    )


def _make(settings: WorkerSettings, strategy: str, catalogue: EmbeddedCatalogue, k: int) -> CoreRecommender:
    return CoreRecommender(build_core(settings, strategy, catalogue, k=k))


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``"decayed_mean:text_weight=0:covisit=false"`` -> ``("decayed_mean", {"text_weight": "0", "covisit": "false"})``:
    a strategy and worker settings that differ from the environment's (names as in ``streamrec worker --help``)."""
    strategy, *pairs = (p.strip() for p in spec.split(":"))
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in WorkerSettings.model_fields:
            raise ConfigError(
                f"{spec!r}: {pair!r} is not setting=value with a worker setting (see `streamrec worker --help`)"
            )
        overrides[key] = value.strip()
    if strategy not in STRATEGIES:
        raise ConfigError(f"{spec!r}: unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    return strategy, overrides


def variant_settings(settings: WorkerSettings, overrides: dict[str, str]) -> WorkerSettings:
    if not overrides:
        return settings
    try:
        return WorkerSettings(**{**settings.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(f"invalid settings {overrides}: {exc.errors()[0]['msg']}") from None


def core_candidates(log_: EventLog, settings: WorkerSettings, specs: Sequence[str], *, k: int) -> list[Candidate]:
    """One candidate per spec (a strategy, optionally with setting overrides: :func:`parse_variant`), each a
    fresh core over the same embedded catalogue."""
    parsed = [(spec, *parse_variant(spec)) for spec in specs]
    variants = [(spec, strategy, variant_settings(settings, overrides)) for spec, strategy, overrides in parsed]
    catalogue = embed_catalogue(log_, settings)
    log.info("embedded %d items in %.1f s", len(catalogue.ids), catalogue.seconds)
    out = []
    for spec, strategy, s in variants:
        params: dict[str, Any] = {
            "strategy": strategy,
            "k": k,
            "covisit": s.covisit,
            "covisit_weight": s.covisit_weight,
            "text_weight": s.text_weight,
            "popularity_weight": s.popularity_weight,
            "half_life_s": s.half_life_s,
            "overrides": dict(parse_variant(spec)[1]),
        }
        out.append(Candidate(spec, "strategy", params, partial(_make, s, strategy, catalogue, k)))
    return out
