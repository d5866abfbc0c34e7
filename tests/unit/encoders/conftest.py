"""The exported model for encoder tests: ``STREAMREC_TEST_MODEL_DIR`` or the user's cache (exported once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def model_dir_for_tests() -> Path:
    given = os.environ.get("STREAMREC_TEST_MODEL_DIR")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "streamrec" / "models" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from streamrec.export.testing import ensure_exported_model
    except ImportError as exc:  # pragma: no cover - the export extra is missing
        pytest.skip(f"cannot export the test model: {exc}")
    return ensure_exported_model(model_dir_for_tests())
