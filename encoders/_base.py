"""The seam between text and vectors: the :class:`TextEncoder` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamrec.encoders.errors import EncoderError

__all__ = ["TextEncoder", "check_texts"]


@runtime_checkable
class TextEncoder(Protocol):
    """Turns texts into unit vectors.

    ``encode(texts)`` returns a C-contiguous ``float32`` array of shape ``(len(texts), dim)`` whose rows have
    L2 norm 1 and follow the order of ``texts``; an empty sequence gives shape ``(0, dim)``.
    """

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate the argument of ``encode``: a sequence of ``str`` (a bare string is refused)."""
    if isinstance(texts, str | bytes):
        raise EncoderError("encode() takes a sequence of texts, not a single string: wrap it in a list")
    try:
        items = list(texts)
    except TypeError as exc:
        raise EncoderError(f"encode() takes a sequence of str, got {type(texts).__name__}") from exc
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise EncoderError(f"encode() takes a sequence of str; item {i} is {type(t).__name__}")
    return items
