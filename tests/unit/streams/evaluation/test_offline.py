"""Driving recommenders over a log in batches, and one evaluation of the baselines end to end (no Kafka)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamrec.cli import build_parser
from streamrec.streams.evaluation.data import EventLog
from streamrec.streams.evaluation.offline import replay_lists, run_system
from streamrec.streams.evaluation.report import finite, plot, table
from streamrec.streams.evaluation.scoring import eval_points
from streamrec.streams.evaluation.suite import Candidate, EvaluationPlan, document, evaluate_log
from streamrec.streams.schemas import Event, EventType, ItemRecord


class Oracle:
    """Knows each user's next item (a perfect recommender) -- or, with ``anti``, never recommends it."""

    def __init__(self, events: Sequence[Event], catalogue: Sequence[str], anti: bool = False) -> None:
        self.catalogue = list(catalogue)
        self.anti = anti
        self.next_of: dict[int, str] = {p.position: p.target for p in eval_points(events)}
        self.seen = 0
        self.batches: list[int] = []

    def recommend(self, batch: Sequence[Event]) -> list[list[str]]:
        self.batches.append(len(batch))
        out = []
        for _ in batch:
            nxt = self.next_of.get(self.seen)
            others = [i for i in self.catalogue if i != nxt]
            out.append(others[:10] if self.anti or nxt is None else [nxt, *others[:9]])
            self.seen += 1
        return out


def _log(n_users: int = 12, n_items: int = 30, n_events: int = 400, seed: int = 0) -> EventLog:
    rng = random.Random(seed)
    items = [ItemRecord(f"i{n}", f"item {n}") for n in range(n_items)]
    events = [
        Event(f"u{rng.randrange(n_users)}", EventType.VIEW, f"i{rng.randrange(n_items)}", None, t * 1000, f"e{t}")
        for t in range(n_events)
    ]
    return EventLog("synthetic", events, items)


def test_replay_lists_follows_the_batches_and_picks_the_points() -> None:
    log = _log()
    points = eval_points(log.events)
    oracle = Oracle(log.events, log.catalogue)
    lists = replay_lists(oracle, log.events, points, batch_size=64)
    assert oracle.batches == [64] * 6 + [16]
    assert [lst[0] for lst in lists] == [p.target for p in points]


def test_perfect_and_useless_recommenders_bound_the_metrics() -> None:
    log = _log()
    points = eval_points(log.events)
    perfect = run_system(
        "oracle",
        "strategy",
        {},
        Oracle(log.events, log.catalogue),
        log.events,
        points,
        k=10,
        catalogue_size=30,
        batch_size=7,
    )
    useless = run_system(
        "anti",
        "strategy",
        {},
        Oracle(log.events, log.catalogue, anti=True),
        log.events,
        points,
        k=10,
        catalogue_size=30,
        batch_size=7,
    )
    assert perfect.scores.means() == {"hr": 1.0, "mrr": 1.0, "ndcg": 1.0}
    assert useless.scores.means() == {"hr": 0.0, "mrr": 0.0, "ndcg": 0.0}


def test_an_evaluation_compares_the_reference_with_every_baseline(tmp_path: Path) -> None:
    log = _log(n_events=600)
    plan = EvaluationPlan(
        k=10, batch_size=16, decayed_half_lives_s=(60.0, 3600.0), cooccurrence_windows=(3,), bootstrap_rounds=200
    )
    oracle = Candidate("oracle", "strategy", {}, lambda: Oracle(log.events, log.catalogue))
    ev = evaluate_log(log, plan, [oracle], progress=lambda _: None)
    names = [r.name for r in ev.results]
    assert names == [
        "oracle",
        "popularity",
        "popularity_decayed (half-life 1min)",
        "popularity_decayed (half-life 1h)",
        "transition",
        "cooccurrence (last 3 items)",
    ]
    doc = document(ev, plan, started="now", command="test")
    assert doc["reference"] == "oracle" and doc["points"] == len(eval_points(log.events))
    assert set(doc["comparisons"]) == set(names[1:])
    pop = doc["comparisons"]["popularity"]["hr"]
    hr_pop = next(s for s in doc["systems"] if s["name"] == "popularity")["metrics"]["hr"]
    assert pop["diff"] == pytest.approx(1.0 - hr_pop, abs=1e-6)
    assert pop["diff_lo"] <= pop["diff"] <= pop["diff_hi"]
    goals = doc["goals"]
    assert goals["vs_popularity"]["met"] and goals["vs_best_baseline"]["met"]
    assert "cpu_flags" in doc["machine"] and doc["machine"]["load_average"]
    text = json.dumps(finite(doc), allow_nan=False)  # strict JSON: infinite ratios become null
    assert json.loads(text)["k"] == 10
    assert "oracle" in table(ev.results, ev.reference, doc["comparisons"])
    plot(doc, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_finite_replaces_infinities() -> None:
    assert finite({"a": [math.inf, 1.0, -math.inf], "b": math.nan, "c": "x"}) == {
        "a": [None, 1.0, None],
        "b": None,
        "c": "x",
    }


def test_evaluate_help_names_every_flag_with_its_env_var() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = " ".join(sub.choices["evaluate"].format_help().split())  # type: ignore[attr-defined]
    for flag, env in (
        ("--events", "STREAMREC_EVALUATE_EVENTS"),
        ("--kafka", "STREAMREC_EVALUATE_KAFKA"),
        ("--strategies", "STREAMREC_EVALUATE_STRATEGIES"),
        ("--users", "STREAMREC_EVALUATE_USERS"),
    ):
        assert flag in text and env in text
    assert "STREAMREC_*" in text  # the recommender is configured like the worker


def test_variants_are_a_strategy_and_worker_settings() -> None:
    from streamrec.errors import ConfigError
    from streamrec.streams.evaluation.core_adapter import parse_variant, variant_settings
    from streamrec.streams.settings import WorkerSettings

    assert parse_variant("sequence") == ("sequence", {})
    strategy, overrides = parse_variant("decayed_mean:text_weight=0:covisit=false:half-life-s=60")
    assert (strategy, overrides) == ("decayed_mean", {"text_weight": "0", "covisit": "false", "half_life_s": "60"})
    base = WorkerSettings(k=7)
    s = variant_settings(base, overrides)
    assert (s.text_weight, s.covisit, s.half_life_s, s.k) == (0.0, False, 60.0, 7)  # the rest as the base
    assert variant_settings(base, {}) is base
    for bad in ("teleport", "decayed_mean:nonsense=1", "decayed_mean:text_weight"):
        with pytest.raises(ConfigError):
            parse_variant(bad)
    with pytest.raises(ConfigError):
        variant_settings(base, {"text_weight": "-1"})


def test_the_evaluated_core_takes_every_core_setting_of_the_worker() -> None:
    """Every CoreConfig field that is also a worker setting reaches the evaluated core (as in StreamWorker)."""
    import dataclasses

    import numpy as np

    from streamrec.streams.core import CoreConfig
    from streamrec.streams.evaluation.core_adapter import EmbeddedCatalogue, build_core
    from streamrec.streams.settings import WorkerSettings

    class Fake:
        dim, name = 8, "fake"

        def encode(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
            return np.ones((len(texts), 8), np.float32) / np.sqrt(8)

    shared = [f.name for f in dataclasses.fields(CoreConfig) if f.name in WorkerSettings.model_fields and f.name != "k"]
    assert "covisit_weight" in shared
    defaults = WorkerSettings()
    changed = {
        n: (not getattr(defaults, n)) if isinstance(getattr(defaults, n), bool) else getattr(defaults, n) + 1
        for n in shared
    }
    settings = WorkerSettings(**changed)
    catalogue = EmbeddedCatalogue(Fake(), [], np.empty((0, 8), np.float32), [], {}, 0.0)  # type: ignore[arg-type]
    core = build_core(settings, "decayed_mean", catalogue, k=10)
    assert {n: getattr(core.config, n) for n in shared} == changed
    assert core.covisit is not None and core.covisit.config.window == settings.covisit_window
