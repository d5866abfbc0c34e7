"""A tiny end-to-end benchmark run on the real broker: a worker and the floor answer, figures are sane."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from streamrec.testing import KafkaForTests

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _positive(x: object) -> bool:
    return isinstance(x, float | int) and math.isfinite(x) and x > 0


@pytest.mark.timeout(180)
def test_quick_bench_writes_sane_json(kafka: KafkaForTests, exported_model: Path, tmp_path: Path) -> None:
    """Through ``streamrec bench`` (the thin command that finds benchmarks/ in the checkout)."""
    from streamrec.commands import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "bench",
            "--bootstrap",
            kafka.bootstrap,
            "--quick",
            "--rates",
            "50",
            "--workers",
            "1",
            "--duration-s",
            "3",
            "--warmup-s",
            "1",
            "--drain-s",
            "10",
            "--search-rates",
            "off",
            "--grid",
            "off",
            "--model-dir",
            str(exported_model),
            "--out",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0  # 1 when a phase got no answers or the floor none
    (written,) = tmp_path.glob("e2e_*.json")  # one run, one JSON + PNG; no *_latest copies
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.name, written.with_suffix(".png").name]
    result = json.loads(written.read_text())
    assert written.with_suffix(".png").stat().st_size > 0
    assert {"machine", "versions", "settings", "floor", "sweeps"} <= result.keys()
    assert result["machine"]["cores"] >= 1 and len(result["machine"]["loadavg_before"]) == 3
    floor = result["floor"]["steps"]
    worker = result["sweeps"]["workers_1"]["steps"]
    for step in (*floor, *worker):
        assert step["offered_rate"] == 50.0
        assert step["missing"] == 0 and step["received"] == step["measured"] == 100
        lat = step["latency_ms"]
        assert all(_positive(lat[k]) for k in ("p50", "p95", "p99", "p99.9", "max"))
        assert lat["p50"] <= lat["p99"] <= lat["max"]
        assert _positive(step["achieved_rate"])
    stages = worker[0]["stages_ms"]
    assert {"queue", "decode", "state", "encode", "index"} <= stages.keys()
    assert _positive(worker[0]["ratio_to_floor"]["p50"])
    assert result["sweeps"]["workers_1"]["worker_metrics"][0]["recommendations"] >= 100
    # the worker's CPU includes its co-visitation owner process (the default), also reported on its own
    cpu = worker[0]["cpu"]
    assert cpu["children"] == 1 and 0 < cpu["children_cpu_ms_per_event"] < cpu["server_cpu_ms_per_event"]
