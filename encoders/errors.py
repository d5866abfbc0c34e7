"""Errors raised by :mod:`streamrec.encoders`."""

from __future__ import annotations

from streamrec.errors import StreamrecError

__all__ = ["EncoderError", "ModelIntegrityError", "ProviderUnavailableError"]


class EncoderError(StreamrecError):
    """The encoder cannot load a model or encode the input it was given."""


class ModelIntegrityError(EncoderError):
    """A model directory's files are missing or differ from its ``manifest.json``: re-run ``streamrec export``."""


class ProviderUnavailableError(EncoderError):
    """An execution provider that was asked for explicitly does not load on this machine."""
