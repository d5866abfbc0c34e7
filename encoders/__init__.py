"""Text → unit vectors, fast: the ONNX Runtime encoder and its embedding cache.

Imports no torch, transformers modelling code, Kafka or metrics library: counters are plain attributes
(``OnnxTextEncoder.stats``, ``CachedEncoder.stats``) for the streams layer to export. Batching is the
caller's: the worker's hot path and catalogue replica hand each micro-batch's texts to one ``encode`` call.
"""

from streamrec.encoders._base import TextEncoder
from streamrec.encoders.cache import CachedEncoder, CacheStats, EmbeddingCache
from streamrec.encoders.errors import EncoderError, ModelIntegrityError, ProviderUnavailableError
from streamrec.encoders.manifest import Manifest, Variant, load_manifest
from streamrec.encoders.onnx import EncoderStats, OnnxEncoderConfig, OnnxTextEncoder, Selection, SelfCheckMode
from streamrec.encoders.providers import PROVIDER_ORDER, ProviderChoice, plan_candidates
from streamrec.encoders.selfcheck import SelfCheckError, SelfCheckResult

__all__ = [
    "PROVIDER_ORDER",
    "CacheStats",
    "CachedEncoder",
    "EmbeddingCache",
    "EncoderError",
    "EncoderStats",
    "Manifest",
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
