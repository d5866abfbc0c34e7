"""Errors raised by :mod:`streamrec.export`."""

from __future__ import annotations

from streamrec.errors import StreamrecError

__all__ = ["ExportError", "VariantValidationError"]


class ExportError(StreamrecError):
    """The model could not be exported (bad input folder, missing export dependency, failed step)."""


class VariantValidationError(ExportError):
    """An exported variant scored below its thresholds against the PyTorch fp32 reference."""
