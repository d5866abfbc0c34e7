"""``streamrec evaluate``: causal next-item evaluation of the recommender core against simple baselines.

A thin entry point: the work is done by :mod:`streamrec.streams.evaluation` (no Kafka there), and with
``--kafka`` by :mod:`streamrec.streams.evaluation.live` (the same log through a real worker).
The recommender is configured exactly like ``streamrec worker``: by the worker's ``STREAMREC_*`` environment
variables (``streamrec worker --help``), so what is evaluated is what a worker with that environment serves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import streamrec
from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError


class EvaluateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_EVALUATE_", frozen=True, extra="ignore")

    events: str = Field(
        "",
        description="JSON Lines file of events, the events topic's schema with 'ts' ('' = the built-in MovieLens-100K)",
    )
    items: str = Field("", description="JSON Lines file of items, the items topic's schema (with --events)")
    users: int = Field(0, ge=0, description="MovieLens: N users sampled with --seed (0: all 943)")
    max_events: int = Field(0, ge=0, description="MovieLens: each user's first N ratings (0: all)")
    seed: int = Field(0, description="seed of the user sample and of the bootstrap")
    strategies: str = Field(
        "",
        description="recommender variants, comma-separated: a strategy, optionally with "
        "worker settings, e.g. 'decayed_mean:text_weight=0:covisit=false'; the "
        "first is compared with every other system ('' = the worker's settings)",
    )
    baselines: str = Field(
        "popularity,popularity_decayed,transition,cooccurrence", description="baselines, comma-separated ('' = none)"
    )
    decayed_half_lives_s: str = Field("3600,86400,604800", description="half-lives of popularity_decayed, s")
    cooccurrence_windows: str = Field("5,20", description="recent items of the user that cooccurrence uses")
    k: int = Field(10, ge=1, le=1000, description="list length scored (HR@K, MRR@K, NDCG@K)")
    batch_size: int = Field(
        64,
        ge=0,
        description="core micro-batch of the offline replay: 64, a batch of a loaded worker (the worker's "
        "STREAMREC_BATCH_MAX is reached only under a backlog); 0 = STREAMREC_BATCH_MAX",
    )
    bootstrap_rounds: int = Field(2000, ge=100, description="bootstrap resamples of the users")
    kafka: bool = Field(False, description="also run the log through Kafka and a real worker, and compare")
    bootstrap: str = Field("", description="Kafka bootstrap servers for --kafka ('' = STREAMREC_BOOTSTRAP)")
    kafka_rate: float = Field(500.0, ge=0, description="--kafka: events/s offered to the worker (0: max)")
    kafka_partitions: int = Field(4, ge=1, description="--kafka: partitions of the run's topics")
    keep_topics: bool = Field(False, description="--kafka: keep the run's topics afterwards")
    out: str = Field(
        "",
        description="folder for the JSON + PNG ('' = benchmarks/results in a source checkout, else the current folder)",
    )
    write: bool = Field(True, description="write the JSON + PNG")
    note: str = Field("", description="a note on the machine (load, other jobs) stored with the results")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="next-item quality of the recommender vs simple baselines (HR@10, MRR, NDCG, coverage)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(p, EvaluateSettings)
    p.set_defaults(func=run)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what}: comma-separated numbers expected, not {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _out_dir(s: EvaluateSettings) -> Path:
    if s.out:
        return Path(s.out)
    repo = Path(streamrec.__file__).resolve().parents[2]
    results = repo / "benchmarks" / "results"
    return results if results.is_dir() else Path.cwd()


def run(args: argparse.Namespace) -> int:
    from streamrec.streams.evaluation import jsonl_log, movielens_log
    from streamrec.streams.evaluation.core_adapter import core_candidates, session_config
    from streamrec.streams.evaluation.report import finite, plot, slug, table
    from streamrec.streams.evaluation.suite import EvaluationPlan, document, evaluate_log
    from streamrec.streams.settings import WorkerSettings

    s = settings_from_args(EvaluateSettings, args)
    worker = WorkerSettings()
    if bool(s.events) != bool(s.items):
        raise ConfigError("give both --events and --items (JSON Lines in the topics' schemas), or neither")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = [round(x, 2) for x in os.getloadavg()]
    log_ = (
        jsonl_log(Path(s.events), Path(s.items))
        if s.events
        else movielens_log(users=s.users, max_events=s.max_events, seed=s.seed)
    )
    print(log_.describe(), flush=True)
    plan = EvaluationPlan(
        k=s.k,
        batch_size=s.batch_size or worker.batch_max,
        baselines=_names(s.baselines),
        decayed_half_lives_s=_floats(s.decayed_half_lives_s, "--decayed-half-lives-s"),
        cooccurrence_windows=tuple(int(w) for w in _floats(s.cooccurrence_windows, "--cooccurrence-windows")),
        bootstrap_rounds=s.bootstrap_rounds,
        seed=s.seed,
        consumed_types=tuple(sorted(t.value for t in session_config(worker).consumed_types)),
    )
    strategies = _names(s.strategies) or (worker.strategy,)
    candidates = core_candidates(log_, worker, strategies, k=s.k)
    ev = evaluate_log(log_, plan, candidates)
    extra: dict[str, Any] = {
        "worker_settings": json.loads(worker.model_dump_json()),
        "note": s.note,
        "load_average_start": load_start,
    }
    if s.kafka:
        extra["kafka"] = _through_kafka(s, worker, ev, strategies[0])
    command = "streamrec " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else "streamrec evaluate"
    doc = document(ev, plan, started=started, command=command, extra=extra)
    print()
    print(table(ev.results, ev.reference, doc["comparisons"]))
    for key, g in doc["goals"].items():
        if isinstance(g, dict):
            print(
                f"goal {key}: HR@{s.k} ratio {g['ratio']:.2f}x [{g['ratio_interval'][0]:.2f}, "
                f"{g['ratio_interval'][1]:.2f}] vs {g['baseline']}, target {g['target_ratio']}x: "
                f"{'met' if g['met'] else 'MISSED'}{' (interval too)' if g['met_with_interval'] else ''}"
            )
    if "kafka" in extra:
        print(_kafka_line(extra["kafka"]))
    if s.write:
        out = _out_dir(s)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"evaluate_{slug(log_.name)}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        stem.with_suffix(".json").write_text(json.dumps(finite(doc), indent=1, allow_nan=False) + "\n")
        plot(doc, stem.with_suffix(".png"))
        print(f"wrote {stem}.json and .png")
    return 0


def _through_kafka(s: EvaluateSettings, worker: Any, ev: Any, spec: str) -> dict[str, Any]:
    """Run the log through a real worker configured as the first variant (its strategy and settings over the
    environment's), score its messages on the same points, compare with the offline run of that variant."""
    from streamrec.streams.evaluation.core_adapter import parse_variant
    from streamrec.streams.evaluation.live import LiveConfig, run_live, score_live_run

    strategy, overrides = parse_variant(spec)
    env = {k: v for k, v in os.environ.items() if k.startswith("STREAMREC_") and not k.startswith("STREAMREC_EVALUATE")}
    env["STREAMREC_K"] = str(s.k)  # as the offline core
    env["STREAMREC_STRATEGY"] = strategy
    env.update({f"STREAMREC_{k.upper()}": v for k, v in overrides.items()})
    with tempfile.TemporaryDirectory(prefix="streamrec-evaluate-") as tmp:
        config = LiveConfig(
            bootstrap=s.bootstrap or worker.bootstrap,
            work_dir=Path(tmp),
            rate=s.kafka_rate,
            partitions=s.kafka_partitions,
            worker_env=env,
            keep_topics=s.keep_topics,
        )
        print(
            f"through Kafka ({config.bootstrap}): {len(ev.log.events):,} events at "
            f"{s.kafka_rate or 'max'}/s into a real worker...",
            flush=True,
        )
        run = run_live(ev.log, config)
    return score_live_run(
        ev,
        run,
        spec,
        params={"strategy": strategy, "overrides": overrides, "rate": s.kafka_rate},
        k=s.k,
        rounds=s.bootstrap_rounds,
        seed=s.seed,
    )


def _kafka_line(k: dict[str, Any]) -> str:
    a = k.get("agreement")
    if not a:
        return f"through Kafka: {k['run']['answered']} of {k['run']['sent']} events answered"
    hr = a["kafka_minus_offline"]["hr"]
    return (
        f"through Kafka vs offline ({a['offline']}): {a['identical_lists']:.1%} identical lists, "
        f"{a['same_items']:.1%} the same items, {a['mean_top_k_overlap']:.1%} top-K overlap; "
        f"HR difference {hr['diff']:+.4f} "
        f"[{hr['diff_lo']:+.4f}, {hr['diff_hi']:+.4f}]; {k['run']['answered']} of {k['run']['sent']} answered"
    )
