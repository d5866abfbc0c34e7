"""Deterministic text for calibration, validation and benchmarks.

Three kinds of text the encoder sees in production, built without network access:

* MovieLens-100k titles and genres (the copy RecBole ships, when installed; parsed by ``streamrec.movielens``),
* product-like titles generated from a fixed vocabulary with a seeded RNG,
* search-query-like short strings generated the same way.

Calibration and validation draw from disjoint halves (even/odd positions after a seeded shuffle), so
validation scores are measured on text the quantizer never saw.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from streamrec.movielens import MovieLensError, load_movies

__all__ = ["TextCorpus", "build_corpus", "movielens_texts", "product_texts", "query_texts"]

logger = logging.getLogger(__name__)

_BRANDS = [
    "Acme",
    "Nordvik",
    "Zenta",
    "Orbis",
    "Kestrel",
    "Lumo",
    "Brava",
    "Solace",
    "Tundra",
    "Vireo",
    "Halden",
    "Mistral",
    "Quanta",
    "Ferro",
    "Alba",
    "Cobalt",
]
_ADJ = [
    "wireless",
    "stainless steel",
    "organic",
    "waterproof",
    "ergonomic",
    "compact",
    "heavy-duty",
    "lightweight",
    "vintage",
    "rechargeable",
    "non-stick",
    "foldable",
    "noise-cancelling",
    "handmade",
    "portable",
    "smart",
    "eco-friendly",
    "premium",
    "adjustable",
    "insulated",
]
_NOUN = [
    "headphones",
    "water bottle",
    "running shoes",
    "coffee grinder",
    "desk lamp",
    "yoga mat",
    "backpack",
    "frying pan",
    "mechanical keyboard",
    "rain jacket",
    "chef's knife",
    "bluetooth speaker",
    "office chair",
    "tent",
    "electric toothbrush",
    "board game",
    "wool socks",
    "smartwatch",
    "blender",
    "bike helmet",
    "throw pillow",
    "phone case",
    "gaming mouse",
    "tea kettle",
    "camera tripod",
    "novel",
    "cookbook",
]
_DETAIL = [
    "for men",
    "for women",
    "for kids",
    "2-pack",
    "with USB-C charging",
    "size M",
    "size 42",
    "1.5 L",
    "in matte black",
    "in forest green",
    "with carrying case",
    "for travel",
    "king size",
    "set of 4",
    "with 2-year warranty",
    "BPA free",
    "for outdoor use",
    "100% cotton",
    "24 oz",
]
_QUERY_HEAD = [
    "best",
    "cheap",
    "how to choose",
    "gift ideas",
    "top rated",
    "review",
    "vs",
    "sale",
    "near me",
    "buy",
    "what is the best",
    "alternatives to",
]
_EXTRA = [
    "Ünïcödé café crème brûlée",
    "naïve résumé",
    "東京 ラーメン",
    "北京烤鸭 recipe",
    "Москва book",
    "🎧 headphones 🔥",
    "😀 emoji gift",
    "ñandú peluche",
    "Straße map",
    "ελληνικά lessons",
]


@dataclass(frozen=True)
class TextCorpus:
    """Texts split into disjoint calibration and validation sets."""

    calibration: tuple[str, ...]
    validation: tuple[str, ...]


def movielens_texts(folder: Path | None = None) -> list[str]:
    """``"Title (year) - genres"`` strings (the file's own title) from RecBole's copy of MovieLens-100k, read by
    :mod:`streamrec.movielens` (``folder``: an ml-100k folder; default: recbole's); [] when it is not there."""
    try:
        movies = load_movies(folder)
    except MovieLensError:
        return []
    out: list[str] = []
    for m in movies:
        if m.raw_title:
            genres = ", ".join(m.genres)
            out.append(f"{m.raw_title} ({m.year}) - {genres}" if m.year else f"{m.raw_title} - {genres}")
    return out


def product_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_BRANDS), rng.choice(_ADJ), rng.choice(_NOUN)]
        for _ in range(rng.randint(0, 3)):
            words.append(rng.choice(_DETAIL))
        out.append(" ".join(words))
    return out


def query_texts(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append(f"{rng.choice(_QUERY_HEAD)} {rng.choice(_NOUN)}")
        elif kind < 0.7:
            out.append(f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_DETAIL)}")
        elif kind < 0.9:
            out.append(f"{rng.choice(_BRANDS).lower()} {rng.choice(_NOUN)}")
        else:
            out.append(rng.choice(_EXTRA))
    return out


def _split(texts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    items = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(items)
    return items[0::2], items[1::2]


def build_corpus(n_per_kind: int = 400, seed: int = 2024, movielens: Path | None = None) -> TextCorpus:
    """Up to ``n_per_kind`` texts of each kind per split, calibration and validation disjoint. ``movielens``: an
    ml-100k folder (default: recbole's)."""
    kinds = [movielens_texts(movielens), product_texts(4 * n_per_kind, seed), query_texts(4 * n_per_kind, seed + 1)]
    if not kinds[0]:
        logger.info("MovieLens titles not found (RecBole not installed): using generated text only")
    splits = [_split(texts, seed) for texts in kinds if texts]
    # round-robin over the kinds, so any prefix of either list mixes all of them
    calib = [t for group in zip_longest(*(c[:n_per_kind] for c, _ in splits)) for t in group if t is not None]
    valid = [t for group in zip_longest(*(v[:n_per_kind] for _, v in splits)) for t in group if t is not None]
    overlap = set(calib) & set(valid)
    valid = [t for t in valid if t not in overlap]
    return TextCorpus(calibration=tuple(calib), validation=tuple(valid))
