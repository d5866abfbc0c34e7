"""``streamrec bench``: end-to-end latency through Kafka, against the floor (a bare aiokafka echo).

A thin entry point: the load generator and the measurement live in the repository's ``benchmarks/``
folder (``benchmarks/e2e_bench.py``; not installed with the package), which this command locates
next to ``src/`` and runs. Writes JSON + PNG under ``benchmarks/results/`` (``e2e_*``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import streamrec
from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import StreamrecError
from streamrec.streams.security import KafkaSecuritySettings


class BenchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_BENCH_", frozen=True, extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers of the broker to measure on")
    quick: bool = Field(False, description="a first look in about a minute: 1 worker + floor at 2 rates")
    rates: str = Field("", description="offered events/s, comma-separated ('' = 100..4000; quick: 100,400)")
    workers: str = Field("", description="worker counts to sweep ('' = 1,2; quick: 1)")
    duration_s: float = Field(0.0, ge=0, description="seconds of load per rate (0 = 12; quick: 5)")
    warmup_s: float = Field(0.0, ge=0, description="first seconds of each rate, excluded (0 = 2; quick: 1)")
    drain_s: float = Field(10.0, gt=0, description="seconds to wait for the last answers of a rate")
    search_mix: float = Field(0.1, ge=0, le=1, description="mixed workload: fraction of ratings preceded by a search")
    search_rates: str = Field("", description="search-only (encoder-bound) run ('' = 100..1000; quick: 100; off)")
    grid: str = Field("", description="batch_max:linger_ms pairs at grid_rate ('' = 6 pairs; quick: off; off)")
    grid_rate: float = Field(1000.0, gt=0, description="offered events/s of the batch/linger grid")
    cdf_rate: float = Field(500.0, gt=0, description="rate whose latency CDF is plotted")
    synthetic_items: int = Field(0, ge=0, description="synthetic product catalogue size (0: off; 100000: minutes)")
    synthetic_rates: str = Field("100,500", description="offered events/s on the synthetic catalogue")
    partitions: int = Field(4, ge=1, description="partitions of the events/output topics")
    batch_max: int = Field(256, ge=1, description="worker STREAMREC_BATCH_MAX for the sweeps (the worker's default)")
    batch_linger_ms: float = Field(2.0, ge=0, description="worker STREAMREC_BATCH_LINGER_MS for the sweeps")
    model_dir: str = Field("", description="exported model ('' = the user cache)")
    out: str = Field("", description="output folder ('' = ~/.cache/streamrec/bench)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="end-to-end latency benchmark through Kafka, against a bare-Kafka floor",
        description=__doc__,
    )
    add_settings_arguments(p, BenchSettings)
    add_settings_arguments(p, KafkaSecuritySettings)
    p.set_defaults(func=run)


def _benchmark_module() -> Any:
    repo = Path(streamrec.__file__).resolve().parents[2]
    if not (repo / "benchmarks" / "e2e_bench.py").is_file():
        raise StreamrecError(
            f"benchmarks/e2e_bench.py not found under {repo}: `streamrec bench` runs from a "
            "source checkout (pip install -e .), not from an installed wheel"
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module("benchmarks.e2e_bench")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(BenchSettings, args)
    security = settings_from_args(KafkaSecuritySettings, args).kafka_security()
    bench = _benchmark_module()
    command = "streamrec bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "streamrec bench"
    config = bench.BenchConfig(**settings.model_dump(), command=command)
    return int(bench.main(config=config, security=security))
