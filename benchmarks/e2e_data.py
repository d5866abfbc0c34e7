"""What the end-to-end benchmark sends: catalogues and event streams.

- MovieLens-100K: its 1,682 movies as items; its ratings, in timestamp order, as events (the real user
  sequences; 10 % preceded by a synthetic search, like ``streamrec replay``).
- Search-heavy: only search events (one per rating), so every event needs the encoder (its embedding
  cache still hits on repeated queries; the benchmark reports the hit ratio).
- Synthetic catalogue: ``n`` deterministic product-like items ("Nordwave Men's Waterproof Trail Running
  Shoes, Size 42, Black"); the events are the MovieLens user sequences with each movie mapped to a fixed
  product, so the index searches all ``n`` items while the sequences stay real.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

from streamrec.streams.movielens import ReplayEvent, load_movies, load_ratings, movie_item, replay_events
from streamrec.streams.schemas import EventType, ItemRecord

_BRANDS = [
    "Nordwave",
    "Acme",
    "Kestrel",
    "Luma",
    "Orbis",
    "Tandem",
    "Vireo",
    "Halden",
    "Pinecrest",
    "Solano",
    "Brightline",
    "Cobalt & Co",
    "Fjordlight",
    "Ironbark",
    "Mistral",
    "Quillon",
    "Redfern",
    "Sable",
]
_CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "Shoes": (
        ["Trail Running Shoes", "Leather Boots", "Canvas Sneakers", "Hiking Boots", "Sandals", "Loafers"],
        ["Waterproof", "Lightweight", "Cushioned", "Breathable", "Slip-On", "Wide-Fit"],
    ),
    "Electronics": (
        [
            "Wireless Earbuds",
            "Bluetooth Speaker",
            "USB-C Charger",
            "Smart Watch",
            "Power Bank",
            "Noise Cancelling Headphones",
            "4K Webcam",
            "Mechanical Keyboard",
        ],
        ["Fast-Charging", "Compact", "Long-Battery", "Portable", "Ergonomic", "Rugged"],
    ),
    "Kitchen": (
        ["Chef's Knife", "Cast Iron Skillet", "Espresso Machine", "Blender", "Cutting Board", "Kettle"],
        ["Stainless Steel", "Non-Stick", "Dishwasher-Safe", "Professional", "Bamboo", "Electric"],
    ),
    "Home": (
        ["Throw Blanket", "Desk Lamp", "Storage Basket", "Wall Clock", "Bed Sheets", "Scented Candle"],
        ["Cotton", "Minimalist", "Handwoven", "Dimmable", "Linen", "Oversized"],
    ),
    "Outdoor": (
        ["Camping Tent", "Sleeping Bag", "Trekking Poles", "Water Bottle", "Daypack", "Headlamp"],
        ["Ultralight", "Insulated", "2-Person", "Collapsible", "Rechargeable", "Weatherproof"],
    ),
    "Clothing": (
        ["Rain Jacket", "Merino Sweater", "Denim Jeans", "Fleece Hoodie", "Chino Shorts", "Wool Socks"],
        ["Slim-Fit", "Organic", "Relaxed", "Quick-Dry", "Stretch", "Recycled"],
    ),
    "Beauty": (
        ["Face Moisturizer", "Shampoo", "Sunscreen SPF 50", "Beard Oil", "Lip Balm", "Hand Cream"],
        ["Fragrance-Free", "Vegan", "Hydrating", "Travel-Size", "Sensitive-Skin", "Natural"],
    ),
    "Toys": (
        ["Building Blocks Set", "Puzzle 1000 Pieces", "RC Car", "Plush Bear", "Board Game", "Kite"],
        ["Educational", "Wooden", "Family", "Glow-in-the-Dark", "Classic", "Deluxe"],
    ),
}
_AUDIENCE = ["Men's", "Women's", "Kids'", "Unisex", ""]
_COLOURS = ["Black", "White", "Navy", "Olive", "Red", "Grey", "Sand", "Teal", "Burgundy", "Mustard"]


def synthetic_item(i: int) -> ItemRecord:
    """Item ``p<i>``: deterministic, product-like, mostly distinct titles."""
    rng = random.Random(i * 7_919 + 17)
    category = sorted(_CATEGORIES)[i % len(_CATEGORIES)]
    nouns, adjectives = _CATEGORIES[category]
    audience = rng.choice(_AUDIENCE) if category in ("Shoes", "Clothing") else ""
    title = " ".join(w for w in (rng.choice(_BRANDS), audience, rng.choice(adjectives), rng.choice(nouns)) if w)
    title += f", {rng.choice(_COLOURS)}, Model {rng.randrange(100, 1000)}"
    return ItemRecord(
        item_id=f"p{i}", title=title, category=category, tags=(category.lower(), rng.choice(adjectives).lower())
    )


def movielens_items() -> list[ItemRecord]:
    return [movie_item(m) for m in load_movies()]


def synthetic_items(n: int) -> Iterator[ItemRecord]:
    return (synthetic_item(i) for i in range(n))


def movielens_events(search_fraction: float, seed: int = 0) -> list[ReplayEvent]:
    """All ratings as events, in timestamp order (the mixed workload)."""
    return list(
        replay_events(load_ratings(), load_movies(), search_fraction=search_fraction, seed=seed, id_prefix="ml")
    )


def search_events(seed: int = 0) -> list[ReplayEvent]:
    """One search event per rating, nothing else: every event needs the encoder."""
    return [
        e
        for e in replay_events(load_ratings(), load_movies(), search_fraction=1.0, seed=seed, id_prefix="ml")
        if e.type is EventType.SEARCH
    ]


def synthetic_events(n_items: int, search_fraction: float, seed: int = 0) -> list[ReplayEvent]:
    """The MovieLens sequences on the synthetic catalogue (movie m -> product p<(m * 7919) % n>)."""

    def mapped(e: ReplayEvent) -> ReplayEvent:
        return dataclasses.replace(e, item_id=f"p{(int(e.item_id) * 7_919) % n_items}")

    return [mapped(e) for e in movielens_events(search_fraction, seed)]


def cycled(events: list[ReplayEvent], start: int, n: int) -> list[ReplayEvent]:
    """``n`` events from ``start``, wrapping around with a new id suffix per lap (ids stay unique)."""
    out = []
    for j in range(start, start + n):
        lap, i = divmod(j, len(events))
        e = events[i]
        out.append(e if lap == 0 else dataclasses.replace(e, event_id=f"{e.event_id}#{lap}"))
    return out
