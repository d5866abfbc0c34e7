"""Text → unit vectors, fast: the ONNX Runtime encoder, its micro-batcher and embedding cache.

Imports no torch, transformers modelling code, Kafka or metrics library: counters are plain attributes
(``OnnxTextEncoder.stats``, ``MicroBatcher.stats``, ``CachedEncoder.stats``) for the streams layer to export.
"""

from streamrec.encoders._base import TextEncoder
from streamrec.encoders.batching import BatcherStats, MicroBatcher
from streamrec.encoders.cache import CachedEncoder, CacheStats, EmbeddingCache
from streamrec.encoders.errors import EncoderError, ModelIntegrityError, ProviderUnavailableError
from streamrec.encoders.manifest import Manifest, Variant, load_manifest
from streamrec.encoders.onnx import EncoderStats, OnnxEncoderConfig, OnnxTextEncoder, Selection, SelfCheckMode
from streamrec.encoders.providers import PROVIDER_ORDER, ProviderChoice, plan_candidates
from streamrec.encoders.selfcheck import SelfCheckError, SelfCheckResult

__all__ = [
    "PROVIDER_ORDER",
    "BatcherStats",
    "CacheStats",
    "CachedEncoder",
    "EmbeddingCache",
    "EncoderError",
    "EncoderStats",
    "Manifest",
    "MicroBatcher",
    "ModelIntegrityError",
    "OnnxEncoderConfig",
    "OnnxTextEncoder",
    "ProviderChoice",
    "ProviderUnavailableError",
    "Selection",
    "SelfCheckError",
    "SelfCheckMode",
    "SelfCheckResult",
    "TextEncoder",
    "Variant",
    "load_manifest",
    "plan_candidates",
]
