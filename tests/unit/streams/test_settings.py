"""The worker's settings: choices are Literal types validated by the settings model; session defaults are
SessionConfig's; the index is built by the kind the settings name."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

import pytest

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError, StreamrecError
from streamrec.index import INDEX_KINDS, ExactIndex, HnswIndex, new_index
from streamrec.streams.batcher import BatcherStopped
from streamrec.streams.hotpath import DeliveryFailed
from streamrec.streams.session import DEFAULT_STRATEGY, STRATEGIES, SessionConfig, StrategyName, make_strategy
from streamrec.streams.settings import WorkerSettings
from streamrec.streams.worker import index_config


def _parse(argv: list[str]) -> WorkerSettings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, WorkerSettings)
    return settings_from_args(WorkerSettings, parser.parse_args(argv))


def test_strategy_literal_names_every_registered_strategy() -> None:
    assert set(get_args(StrategyName)) == set(STRATEGIES)
    assert DEFAULT_STRATEGY in STRATEGIES


def test_session_defaults_come_from_session_config() -> None:
    s, c = WorkerSettings(), SessionConfig()
    assert (s.strategy, s.half_life_s, s.blend_alpha, s.exclude_seen, s.exclude_purchased) == (
        DEFAULT_STRATEGY,
        c.half_life_s,
        c.blend_alpha,
        c.exclude_seen,
        c.exclude_purchased,
    )


@pytest.mark.parametrize(
    ("field", "env", "good", "bad"),
    [
        ("provider", "STREAMREC_PROVIDER", "cpu", "rocm"),
        ("strategy", "STREAMREC_STRATEGY", "sequence", "popular"),
        ("index_kind", "STREAMREC_INDEX_KIND", "exact", "faiss"),
    ],
)
def test_choices_are_validated_by_the_model(
    monkeypatch: pytest.MonkeyPatch, field: str, env: str, good: str, bad: str
) -> None:
    assert getattr(_parse([]), field) == WorkerSettings.model_fields[field].default
    monkeypatch.setenv(env, good)
    assert getattr(_parse([]), field) == good
    monkeypatch.setenv(env, bad)
    with pytest.raises(ConfigError, match=env):
        _parse([])
    monkeypatch.delenv(env)
    flag = "--" + field.replace("_", "-")
    assert getattr(_parse([flag, good]), field) == good
    with pytest.raises(SystemExit):  # argparse: "invalid choice", listing the valid ones
        _parse([flag, bad])


def test_help_lists_the_choices() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, WorkerSettings)
    text = " ".join(parser.format_help().split())
    assert "--strategy {decayed_mean,sequence}" in text
    assert "--index-kind {hnsw,exact}" in text


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_the_index_is_built_by_the_kind_the_settings_name(kind: str) -> None:
    s = WorkerSettings(index_kind=kind, index_ef=20, index_full_scan_below=10)  # type: ignore[arg-type]
    index = new_index(index_config(s), 8)
    assert isinstance(index, {"hnsw": HnswIndex, "exact": ExactIndex}[kind])
    if isinstance(index, HnswIndex):
        assert (index.ef, index.full_scan_below) == (20, 10)


def test_every_strategy_setting_builds() -> None:
    for name in get_args(StrategyName):
        assert make_strategy(name).name == name


def test_streams_exceptions_derive_from_the_root() -> None:
    assert issubclass(DeliveryFailed, StreamrecError) and issubclass(BatcherStopped, StreamrecError)


def test_the_bench_measures_the_workers_batch_size_by_default() -> None:
    """`streamrec bench` sets STREAMREC_BATCH_MAX for its workers: by default the worker's own default, so the
    latency it reports is the default worker's (benchmarks/e2e_bench.py's config likewise)."""
    from streamrec.commands.bench import BenchSettings

    worker_default = WorkerSettings.model_fields["batch_max"].default
    assert BenchSettings.model_fields["batch_max"].default == worker_default
    text = (Path(__file__).parents[3] / "benchmarks" / "e2e_bench.py").read_text()
    assert f"    batch_max: int = {worker_default}  " in text
