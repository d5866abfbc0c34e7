"""HF BERT-family model → ONNX → INT8/fp16/QDQ variants, validated against PyTorch fp32 (export time only).

``python -m streamrec.export --help`` or ``streamrec export``; the library entry point is :func:`export_model`.
Needs the ``export`` extra (torch, optimum-onnx, onnx); the runtime (:mod:`streamrec.encoders`) does not.
"""

from streamrec.export.corpus import TextCorpus, build_corpus
from streamrec.export.errors import ExportError, VariantValidationError
from streamrec.export.pipeline import (
    DEFAULT_CPU_RECIPE,
    DEFAULT_TRT_RECIPE,
    ExportOptions,
    VariantSpec,
    default_variants,
    export_model,
    is_current_export,
    is_exported_model,
)
from streamrec.export.quantize import DynamicInt8Recipe, StaticQdqRecipe, ffn_output_pattern
from streamrec.export.validate import Scores, Thresholds, score

__all__ = [
    "DEFAULT_CPU_RECIPE",
    "DEFAULT_TRT_RECIPE",
    "DynamicInt8Recipe",
    "ExportError",
    "ExportOptions",
    "Scores",
    "StaticQdqRecipe",
    "TextCorpus",
    "Thresholds",
    "VariantSpec",
    "VariantValidationError",
    "build_corpus",
    "default_variants",
    "export_model",
    "ffn_output_pattern",
    "is_current_export",
    "is_exported_model",
    "score",
]
