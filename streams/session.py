"""Per-user session state, its update rule and the two session strategies. Pure numpy, no Kafka.

Update rule (the decayed mean)
------------------------------
The session vector is the exponentially time-decayed, event-type-weighted mean of the embeddings of
the session's items and search queries, re-normalised. For events i with unit embeddings x_i,
type weights w_i and times t_i, at time t:

    a_i  = w_i * 0.5 ** ((t - t_i) / half_life)
    S(t) = sum_i a_i * x_i          W(t) = sum_i a_i          mean = S / W          s = S / ||S||

It is kept incrementally. The state stores the unit direction s, the accumulated weight W and the
length of the mean r = ||S|| / W (so S = W * r * s exactly). On an event at time t with unit
embedding x and weight w = weights[type]:

    decay = 0.5 ** ((t - t_last) / half_life)   (= 1 when t <= t_last: a late event never grows W)
    S'    = decay * W * r * s + w * x
    W'    = decay * W + w
    s'    = S' / ||S'||       r' = ||S'|| / W'        t_last' = max(t_last, t)

The first event gives s' = x, W' = w, r' = 1. An event with no vector (an item neither in the index
nor titled) only decays: W' = decay * W, s and r unchanged. If ||S'|| is ~0 (opposite vectors
cancelling) s' = x. Duplicates: an event whose ``event_id`` is among the last ``max_event_ids`` ids
seen leaves the state unchanged (a re-delivery re-applies nothing) and is flagged ``duplicate``.

Strategies (``make_strategy(name, config)``)
--------------------------------------------
* ``decayed_mean``: the query vector is s.
* ``sequence``: the encoder also embeds the session text -- the last N item titles and search
  queries, most recent first, joined with " ; ", cut to ``sequence_max_chars`` -- and the query
  vector is normalise(alpha * e(session text) + (1 - alpha) * s) (just e(text) with no s yet).

Micro-batching (how the worker drives a strategy)
-------------------------------------------------
1. For each event of a batch, in order: ``plan = strategy.plan(state, event, title=...,
   item_vector_known=...)``; ``plan.texts`` lists what must be encoded. For the same user's next
   event in the batch pass ``plan.state`` (the bookkeeping advanced; vectors untouched).
2. Encode the union of all ``plan.texts`` in one call.
3. For each event, in order: ``update = strategy.apply(state, plan, item_vector=...,
   text_vectors=...)`` with ``state`` the user's CURRENT state (the previous ``update.state``) and
   ``text_vectors`` the rows for ``plan.texts``, in that order. ``update.query`` is the vector to
   search with (None: use the fallback); ``update.state`` is what to store.

The state's JSON codec stores the embedding as base64 of little-endian float32; no pickle.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from streamrec.errors import ConfigError, StreamrecError
from streamrec.streams.consumed import EMPTY_CONSUMED, ConsumedSet, ConsumedSetError
from streamrec.streams.schemas import Event, EventType

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "DecayedMeanStrategy",
    "SequenceStrategy",
    "SessionConfig",
    "SessionPlan",
    "SessionState",
    "SessionStateError",
    "SessionStrategy",
    "SessionUpdate",
    "StrategyName",
    "Vector",
    "decay_factor",
    "exclusions",
    "make_strategy",
    "session_text",
    "update_mean",
]

Vector = npt.NDArray[np.float32]
_EPS = 1e-12


class SessionStateError(StreamrecError):
    """Stored session bytes that cannot be read back (corrupt, truncated or from another format)."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How sessions evolve. ``weight_of(type)`` gives the type weight."""

    half_life_s: float = 300.0  # measured: README 'Choosing the strategy' (benchmarks/results/strategy.json)
    view_weight: float = 1.0
    click_weight: float = 2.0
    search_weight: float = 1.5
    add_to_cart_weight: float = 4.0
    purchase_weight: float = 6.0
    max_recent: int = 50  # recently seen item ids kept (and excluded)
    max_purchased: int = 200  # purchased item ids kept (and excluded)
    max_event_ids: int = 32  # event ids remembered for duplicate detection
    sequence_length: int = 8  # N: titles / queries in the sequence strategy's session text
    sequence_max_chars: int = 512  # ~128 MiniLM word pieces
    blend_alpha: float = 0.75  # sequence: weight of the session-text vector (measured: 0.75 > 0.5 > 0.25)
    exclude_seen: bool = True
    exclude_purchased: bool = True
    # items of events of these types are "consumed": never recommended to that user again (others may be re-shown)
    consumed_types: frozenset[EventType] = frozenset(
        {EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE}
    )
    max_consumed: int = 4096  # consumed items remembered per user (8 bytes each; see streams/consumed.py)

    def __post_init__(self) -> None:
        if not (self.half_life_s > 0 and math.isfinite(self.half_life_s)):
            raise ConfigError(f"half_life_s must be a positive number of seconds, not {self.half_life_s}")
        for t in EventType:
            w = self.weight_of(t)
            if not (w >= 0 and math.isfinite(w)):
                raise ConfigError(f"the weight of {t.value!r} events must be >= 0, not {w}")
        if not 0.0 <= self.blend_alpha <= 1.0:
            raise ConfigError(f"blend_alpha must be in [0, 1], not {self.blend_alpha}")
        for name in (
            "max_recent",
            "max_purchased",
            "max_event_ids",
            "sequence_length",
            "sequence_max_chars",
            "max_consumed",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")

    def weight_of(self, event_type: EventType) -> float:
        return float(getattr(self, f"{event_type.value}_weight"))


@dataclass(frozen=True, slots=True, eq=False)
class SessionState:
    """One user's session. Lists are most-recent-first and bounded by :class:`SessionConfig`.

    ``embedding``: unit float32 vector s (None before the first usable vector); ``weight``: W;
    ``mean_norm``: r = ||S|| / W; ``recent_texts``: ("item" | "query", text) pairs; ``consumed``: hashes of
    every item consumed (bounded, see :class:`SessionConfig`); ``last_list``: the item ids of the last list
    published to the user (for the live quality metric).
    """

    embedding: Vector | None = None
    weight: float = 0.0
    mean_norm: float = 0.0
    last_ts_ms: int | None = None
    recent_items: tuple[str, ...] = ()
    purchased: tuple[str, ...] = ()
    recent_texts: tuple[tuple[str, str], ...] = ()
    n_events: int = 0
    last_event_ids: tuple[str, ...] = ()
    consumed: ConsumedSet = EMPTY_CONSUMED
    last_list: tuple[str, ...] = ()

    FORMAT: ClassVar[int] = 2  # 1: without consumed / last_list (still read)

    def to_json_bytes(self) -> bytes:
        emb = None
        if self.embedding is not None:
            emb = base64.b64encode(np.asarray(self.embedding, dtype="<f4").tobytes()).decode("ascii")
        doc = {
            "v": self.FORMAT,
            "embedding": emb,
            "weight": self.weight,
            "mean_norm": self.mean_norm,
            "last_ts_ms": self.last_ts_ms,
            "recent_items": self.recent_items,
            "purchased": self.purchased,
            "recent_texts": self.recent_texts,
            "n_events": self.n_events,
            "last_event_ids": self.last_event_ids,
            "consumed": self.consumed.to_text(),
            "last_list": self.last_list,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes, *, dim: int | None = None) -> SessionState:
        """Read back :meth:`to_json_bytes`; raise :class:`SessionStateError` on anything corrupt.

        ``dim``: the expected embedding dimension (checked when given).
        """
        try:
            doc = json.loads(data.decode("utf-8"))
            return cls._from_doc(doc, dim)
        except SessionStateError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, ConsumedSetError) as exc:
            raise SessionStateError(f"corrupt session state ({exc!r}); drop it to start the session afresh") from None

    @classmethod
    def _from_doc(cls, doc: Any, dim: int | None) -> SessionState:
        if not isinstance(doc, dict):
            raise SessionStateError("session state is not a JSON object")
        if doc.get("v") not in (1, cls.FORMAT):
            raise SessionStateError(f"session state format {doc.get('v')!r} is not {cls.FORMAT}")
        embedding: Vector | None = None
        if doc["embedding"] is not None:
            raw = base64.b64decode(_typed(doc["embedding"], str, "embedding"), validate=True)
            if len(raw) == 0 or len(raw) % 4:
                raise SessionStateError(f"embedding has {len(raw)} bytes, not a float32 vector")
            embedding = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            if dim is not None and embedding.shape[0] != dim:
                raise SessionStateError(f"embedding has dimension {embedding.shape[0]}, expected {dim}")
            norm = float(np.linalg.norm(embedding))
            if not (math.isfinite(norm) and abs(norm - 1.0) < 1e-3):
                raise SessionStateError(f"embedding is not a unit vector (norm {norm})")
            embedding.flags.writeable = False
        weight = float(_typed(doc["weight"], (int, float), "weight"))
        mean_norm = float(_typed(doc["mean_norm"], (int, float), "mean_norm"))
        if not (math.isfinite(weight) and weight >= 0 and 0 <= mean_norm <= 1.0 + 1e-6):
            raise SessionStateError(f"weight {weight} / mean_norm {mean_norm} out of range")
        last_ts = doc["last_ts_ms"]
        if last_ts is not None:
            last_ts = _typed(last_ts, int, "last_ts_ms")
        texts = tuple((_typed(k, str, "kind"), _typed(t, str, "text")) for k, t in doc["recent_texts"])
        n_events = _typed(doc["n_events"], int, "n_events")
        if n_events < 0:
            raise SessionStateError("n_events < 0")
        return cls(
            embedding=embedding,
            weight=weight,
            mean_norm=mean_norm,
            last_ts_ms=last_ts,
            recent_items=_strs(doc["recent_items"], "recent_items"),
            purchased=_strs(doc["purchased"], "purchased"),
            recent_texts=texts,
            n_events=n_events,
            last_event_ids=_strs(doc["last_event_ids"], "last_event_ids"),
            consumed=ConsumedSet.from_text(_typed(doc.get("consumed", ""), str, "consumed")),
            last_list=_strs(doc.get("last_list", []), "last_list"),
        )


def _typed(v: Any, types: type | tuple[type, ...], name: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, types):
        raise SessionStateError(f"session field {name!r} has the wrong type ({type(v).__name__})")
    return v


def _strs(v: Any, name: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise SessionStateError(f"session field {name!r} is not a list")
    return tuple(_typed(x, str, name) for x in v)


# --- the update rule -----------------------------------------------------------------------------


def decay_factor(t_ms: int, last_ts_ms: int | None, half_life_s: float) -> float:
    """0.5 ** ((t - t_last) / half_life); 1 for the first event and for out-of-order events."""
    if last_ts_ms is None or t_ms <= last_ts_ms:
        return 1.0
    return float(0.5 ** ((t_ms - last_ts_ms) / 1000.0 / half_life_s))


def update_mean(
    embedding: Vector | None, weight: float, mean_norm: float, x: Vector | None, w: float, decay: float
) -> tuple[Vector | None, float, float]:
    """One step of the decayed mean (module docstring): returns (s', W', r')."""
    decayed = decay * weight
    if x is None or w <= 0:
        return embedding, decayed, mean_norm
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    x_norm = float(np.linalg.norm(x))
    if not (x_norm > _EPS and math.isfinite(x_norm)):
        return embedding, decayed, mean_norm
    x = x / x_norm
    new_weight = decayed + w
    if embedding is None:  # the first usable vector (W is 0 until then)
        s_new, new_norm = x.astype(np.float32), 1.0
    else:
        total = decayed * mean_norm * embedding.astype(np.float64) + w * x.astype(np.float64)
        length = float(np.linalg.norm(total))
        if length <= _EPS * new_weight:
            s_new, new_norm = x.astype(np.float32), 0.0
        else:
            s_new, new_norm = (total / length).astype(np.float32), min(1.0, length / new_weight)
    s_new.flags.writeable = False
    return s_new, new_weight, new_norm


def _bounded_front(items: tuple[str, ...], new: str, bound: int) -> tuple[str, ...]:
    """``new`` first, then ``items`` without it, cut to ``bound``."""
    if bound <= 0:
        return ()
    try:
        at = items.index(new)
    except ValueError:
        return (new, *items[: bound - 1])
    if items.count(new) > 1:  # (never written so, but a state read back may hold repeats: drop them all)
        return (new, *(i for i in items if i != new))[:bound]
    return (new, *items[:at], *items[at + 1 :])[:bound]


def _same_bookkeeping(a: SessionState, b: SessionState) -> bool:
    """Whether ``_bookkeeping`` gives the same state from ``a`` and ``b`` up to the vector part (for any event):
    identical lists (the same objects, so no comparison of their contents)."""
    return a is b or (
        a.recent_items is b.recent_items
        and a.purchased is b.purchased
        and a.consumed is b.consumed
        and a.recent_texts is b.recent_texts
        and a.last_event_ids is b.last_event_ids
        and a.last_list is b.last_list
        and a.n_events == b.n_events
    )


def _text_of(event: Event, title: str | None) -> tuple[str, str] | None:
    if event.type is EventType.SEARCH:
        return ("query", event.query) if event.query else None
    title = title or event.title
    return ("item", title) if title else None


def _bookkeeping(state: SessionState, event: Event, title: str | None, config: SessionConfig) -> SessionState:
    """Everything an event changes except the vector part (embedding, weight, mean_norm, last_ts)."""
    recent, purchased, consumed = state.recent_items, state.purchased, state.consumed
    if event.item_id is not None:
        recent = _bounded_front(recent, event.item_id, config.max_recent)
        if event.type is EventType.PURCHASE:
            purchased = _bounded_front(purchased, event.item_id, config.max_purchased)
        if event.type in config.consumed_types:
            consumed = consumed.with_added((event.item_id,), config.max_consumed)
    texts = state.recent_texts
    text = _text_of(event, title)
    if text is not None and config.sequence_length > 0:
        texts = (text, *texts)[: config.sequence_length]
    ids = (event.event_id, *state.last_event_ids)[: config.max_event_ids]
    return replace(
        state,
        recent_items=recent,
        purchased=purchased,
        recent_texts=texts,
        n_events=state.n_events + 1,
        last_event_ids=ids,
        consumed=consumed,
    )


def session_text(state: SessionState, config: SessionConfig) -> str:
    """The sequence strategy's text: last N titles/queries, most recent first, " ; "-joined, cut to budget."""
    budget = config.sequence_max_chars
    parts: list[str] = []
    used = 0
    for _, text in state.recent_texts[: config.sequence_length]:
        text = " ".join(text.split())
        if not text:
            continue
        extra = len(text) + (3 if parts else 0)
        if used + extra > budget:
            if not parts:
                parts.append(text[:budget])
            break
        parts.append(text)
        used += extra
    return " ; ".join(parts)


def exclusions(state: SessionState, config: SessionConfig) -> set[str]:
    """Item ids not to recommend: purchased ∪ recently seen, as the config's flags say."""
    out: set[str] = set()
    if config.exclude_purchased:
        out.update(state.purchased)
    if config.exclude_seen:
        out.update(state.recent_items)
    return out


# --- strategies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SessionPlan:
    """The vector-free half of an update: what to encode for ``event``.

    ``texts``: encode these, in order, and pass the rows to ``apply`` as ``text_vectors``.
    ``state``: the bookkeeping advanced (lists, ids, counters; vectors NOT updated) -- plan the same
    user's next event of a batch on it, but never store it.
    """

    event: Event
    title: str | None
    duplicate: bool
    texts: tuple[str, ...]
    state: SessionState
    own_text: bool = False  # texts[0] is the event's own text (query / unknown item's title)
    before: SessionState | None = None  # the state it was planned from (apply reuses the bookkeeping if it matches)


@dataclass(frozen=True, slots=True, eq=False)
class SessionUpdate:
    """The result of ``apply``: the state to store and the vector to search with (None: fallback)."""

    state: SessionState
    query: Vector | None
    duplicate: bool = False


class SessionStrategy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def config(self) -> SessionConfig: ...

    def plan(
        self, state: SessionState | None, event: Event, *, title: str | None = None, item_vector_known: bool = False
    ) -> SessionPlan: ...

    def apply(
        self,
        state: SessionState | None,
        plan: SessionPlan,
        *,
        item_vector: Vector | None = None,
        text_vectors: Sequence[Vector] | npt.NDArray[np.float32] = (),
    ) -> SessionUpdate: ...


@dataclass(frozen=True)
class DecayedMeanStrategy:
    """Query vector = the decayed mean s. Encodes only search queries and unknown items' titles."""

    config: SessionConfig = field(default_factory=SessionConfig)
    name: str = "decayed_mean"

    def plan(
        self, state: SessionState | None, event: Event, *, title: str | None = None, item_vector_known: bool = False
    ) -> SessionPlan:
        """``title``: the item's title from the catalogue (else ``event.title`` is used).
        ``item_vector_known``: the index has the item's vector (so its title needs no encoding)."""
        state = state or SessionState()
        title = title or event.title
        if event.event_id in state.last_event_ids:
            return SessionPlan(event, title, True, self._extra_texts(state, state, duplicate=True), state)
        after = _bookkeeping(state, event, title, self.config)
        own: tuple[str, ...] = ()
        if event.type is EventType.SEARCH and event.query:
            own = (event.query,)
        elif event.type is not EventType.SEARCH and not item_vector_known and title:
            own = (title,)
        texts = own + self._extra_texts(state, after, duplicate=False)
        return SessionPlan(event, title, False, texts, after, bool(own), state)

    def _extra_texts(self, before: SessionState, after: SessionState, *, duplicate: bool) -> tuple[str, ...]:
        return ()

    def apply(
        self,
        state: SessionState | None,
        plan: SessionPlan,
        *,
        item_vector: Vector | None = None,
        text_vectors: Sequence[Vector] | npt.NDArray[np.float32] = (),
    ) -> SessionUpdate:
        """``state``: the user's current state; ``item_vector``: the item's vector from the index
        (None if unknown); ``text_vectors``: one row per ``plan.texts``."""
        state = state or SessionState()
        if len(text_vectors) != len(plan.texts):
            raise ValueError(f"apply() got {len(text_vectors)} text vectors for {len(plan.texts)} planned texts")
        event = plan.event
        if event.event_id in state.last_event_ids:
            return SessionUpdate(state, self._query(state, plan, text_vectors), duplicate=True)
        x: Vector | None = item_vector
        if plan.own_text:
            x = np.asarray(text_vectors[0], dtype=np.float32)
        decay = decay_factor(event.ts_ms, state.last_ts_ms, self.config.half_life_s)
        emb, weight, norm = update_mean(
            state.embedding, state.weight, state.mean_norm, x, self.config.weight_of(event.type), decay
        )
        last_ts = event.ts_ms if state.last_ts_ms is None else max(state.last_ts_ms, event.ts_ms)
        if plan.before is not None and _same_bookkeeping(plan.before, state):
            after = plan.state  # planned from the same lists: its bookkeeping is this event's (same objects)
        else:
            after = _bookkeeping(state, event, plan.title, self.config)
        new_state = replace(after, embedding=emb, weight=weight, mean_norm=norm, last_ts_ms=last_ts)
        return SessionUpdate(new_state, self._query(new_state, plan, text_vectors))

    def _query(
        self, state: SessionState, plan: SessionPlan, text_vectors: Sequence[Vector] | npt.NDArray[np.float32]
    ) -> Vector | None:
        return state.embedding


@dataclass(frozen=True)
class SequenceStrategy(DecayedMeanStrategy):
    """Also embeds the session text every event: query = normalise(alpha * e(text) + (1 - alpha) * s)."""

    name: str = "sequence"

    def _extra_texts(self, before: SessionState, after: SessionState, *, duplicate: bool) -> tuple[str, ...]:
        text = session_text(after, self.config)
        return (text,) if text else ()

    def _query(
        self, state: SessionState, plan: SessionPlan, text_vectors: Sequence[Vector] | npt.NDArray[np.float32]
    ) -> Vector | None:
        n_own = 1 if plan.own_text else 0
        if len(text_vectors) <= n_own:  # no session text: the mean alone
            return state.embedding
        seq = np.asarray(text_vectors[n_own], dtype=np.float64)
        alpha = self.config.blend_alpha
        blended = alpha * seq if state.embedding is None else alpha * seq + (1 - alpha) * state.embedding
        if state.embedding is None and alpha == 0:
            return None
        norm = float(np.linalg.norm(blended))
        if not (norm > _EPS and math.isfinite(norm)):
            return state.embedding
        out = (blended / norm).astype(np.float32)
        out.flags.writeable = False
        return out


StrategyName = Literal["decayed_mean", "sequence"]  # the keys of STRATEGIES (a test checks they agree)
DEFAULT_STRATEGY: StrategyName = "decayed_mean"  # measured: README, 'Choosing the strategy'

STRATEGIES: Mapping[str, type[DecayedMeanStrategy]] = {
    "decayed_mean": DecayedMeanStrategy,
    "sequence": SequenceStrategy,
}


def make_strategy(name: str, config: SessionConfig | None = None) -> SessionStrategy:
    """The strategy registered under ``name`` (``decayed_mean`` | ``sequence``)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown session strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
    return cls(config=config or SessionConfig())
