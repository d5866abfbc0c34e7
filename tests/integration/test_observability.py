"""Observability against real parts: a real Prometheus scraping a real worker; the Grafana dashboard's
queries name only metrics the worker exports; the worker's counters are right."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.testing import KafkaForTests, WorkerProcess, consume, free_port, produce, start_worker, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "streamrec.json"


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    return exprs


def metric_names(expr: str) -> set[str]:
    # label_values(metric, label) and metric{...} / metric[...] / bare metric
    return set(re.findall(r"\b(streamrec_[a-z0-9_]+)\b", expr))


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (./run test installs Debian's prometheus package)")
        pytest.skip(f"{tool} is not installed: apt-get install prometheus")
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = _need("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: streamrec-worker\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.terminate()
        p.wait(30)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
    except OSError:
        return []
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def _wait_query(base: str, expr: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = _query(base, expr)
        if result and all(math.isfinite(float(r["value"][1])) for r in result):
            return result
        time.sleep(1.0)
    try:
        with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as resp:
            active = json.loads(resp.read())["data"]["activeTargets"]
        targets = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in active]
    except OSError as exc:
        targets = [("prometheus does not answer", str(exc), "")]
    raw = _query(base, "streamrec_pipeline_recommendations_total[2m]")
    raise AssertionError(
        f"Prometheus returned nothing finite for {expr!r} within {timeout_s:.0f} s; targets {targets}; raw {raw}"
    )


async def test_prometheus_scrapes_a_real_worker_and_the_dashboard_matches_it(
    kafka: KafkaForTests, exported_model: Path, tmp_path: Path, prometheus: Any
) -> None:
    names = {k: unique_name(k) for k in ("app", "events", "items", "recs", "dlq")}
    env = {
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        "STREAMREC_MODEL_DIR": str(exported_model),
        "STREAMREC_DATA_DIR": str(tmp_path / "w"),
        "STREAMREC_APP_ID": names["app"],
        "STREAMREC_EVENTS_TOPIC": names["events"],
        "STREAMREC_ITEMS_TOPIC": names["items"],
        "STREAMREC_RECOMMENDATIONS_TOPIC": names["recs"],
        "STREAMREC_DEAD_LETTER_TOPIC": names["dlq"],
        "STREAMREC_PARTITIONS": "2",
    }
    port = free_port()
    worker: WorkerProcess = start_worker(env, tmp_path / "worker.log", metrics_port=port)
    try:
        base = prometheus(f"127.0.0.1:{port}")
        worker.wait_until(lambda m: "streamrec_index_ready" in m, what="metrics")
        items = [
            (f"i{n}".encode(), json.dumps({"item_id": f"i{n}", "title": t}).encode())
            for n, t in enumerate(
                [
                    "red shoes",
                    "blue shoes",
                    "green tea",
                    "black tea",
                    "camping tent",
                    "coffee beans",
                    "coffee grinder",
                    "yoga mat",
                    "phone case",
                    "novel",
                ]
            )
        ]
        await produce(kafka.bootstrap, names["items"], items)
        worker.wait_until(lambda m: m.get("streamrec_index_items") == len(items), what="catalogue")

        _wait_query(base, "streamrec_pipeline_recommendations_total == 0")  # scraped before any event
        n_valid, n_bad = 120, 7
        records: list[tuple[bytes | None, bytes | None]] = []
        for i in range(n_valid):
            doc = {"user_id": f"u{i % 9}", "type": "click", "item_id": f"i{i % 10}", "event_id": f"e{i}"}
            records.append((doc["user_id"].encode(), json.dumps(doc).encode()))
            if i % 17 == 0 and len(records) < n_valid + n_bad:
                records.append((b"u1", b"not json at all"))
        assert len(records) == n_valid + n_bad
        await produce(kafka.bootstrap, names["events"], records)
        await consume(kafka.bootstrap, names["recs"], want=n_valid)

        # The worker's counters say N and M.
        m = worker.wait_until(
            lambda m: m.get("streamrec_pipeline_recommendations_total") == n_valid, what="all recommendations"
        )
        assert m[f'streamrec_pipeline_dead_letters_total{{reason="invalid_json",source="{names["events"]}"}}'] == n_bad
        assert m['streamrec_pipeline_events_total{outcome="dead_letter",type="invalid"}'] == n_bad
        # (users who have seen the whole 10-item catalogue are answered by the fallback)
        assert (
            sum(
                m[f'streamrec_pipeline_events_total{{outcome="{o}",type="click"}}']
                for o in ("recommended", "fallback", "duplicate")
            )
            == n_valid
        )
        assert m['streamrec_pipeline_events_total{outcome="duplicate",type="click"}'] == 0
        assert m['streamrec_pipeline_end_to_end_seconds_count{clock="event_ts"}'] == n_valid

        # The live quality metric, on a stream whose hits are known in advance: with 10 items and K = 10, every
        # list holds all the items the user has not consumed yet, so an event is a hit exactly when its item is
        # new to the user; an event is scored when the list before it was not empty (not the user's first
        # event, and the user had not consumed all 10 items yet).
        seen: dict[str, set[str]] = {}
        evaluated = hits = 0
        for i in range(n_valid):
            user, item = f"u{i % 9}", f"i{i % 10}"
            if user in seen and len(seen[user]) < 10:
                evaluated += 1
                hits += item not in seen[user]
            seen.setdefault(user, set()).add(item)
        assert 0 < hits <= evaluated  # (misses and ranks: tests/unit/streams/test_core.py)
        assert m['streamrec_quality_live_evaluated_total{type="click"}'] == evaluated
        assert m['streamrec_quality_live_hits_total{type="click"}'] == hits

        # Every metric a dashboard query names is one the running worker exports.
        exported = {key.partition("{")[0] for key in m}
        used = set().union(*(metric_names(e) for e in dashboard_queries()))
        assert used, "the dashboard names no metric"
        assert used <= exported, f"dashboard queries name metrics the worker does not export: {used - exported}"

        # Prometheus, scraping the worker, answers the dashboard's core queries with data.
        _wait_query(base, "sum(increase(streamrec_pipeline_recommendations_total[1m])) > 0")
        p99 = _wait_query(
            base, "histogram_quantile(0.99, sum by (le) (rate(streamrec_pipeline_end_to_end_seconds_bucket[1m])))"
        )
        assert float(p99[0]["value"][1]) > 0
        _wait_query(base, 'sum by (type) (rate(streamrec_pipeline_events_total{outcome="recommended"}[1m]))')
    finally:
        assert worker.stop() == 0


def test_dashboard_queries_are_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["templating"]["list"][0]["name"] == "instance"
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            if "histogram_quantile" in expr:
                assert re.search(r"sum by \(le[,)]", expr), f"quantile must aggregate by le: {expr}"
                assert "_bucket{" in expr and "rate(" in expr, expr
            if "streamrec_" in expr and "label_values" not in expr:
                assert 'instance=~"$instance"' in expr, f"panel ignores the worker variable: {expr}"


def test_prometheus_config_passes_promtool_and_compose_references_exist() -> None:
    import yaml

    promtool = _need("promtool")
    out = subprocess.run(
        [promtool, "check", "config", str(ROOT / "docker/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "worker", "prometheus", "grafana", "replay"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (ROOT / "docker" / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "docker" / source).exists(), f"{name}: {source} does not exist"
        for dep in svc.get("depends_on", []):
            assert dep in services
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    ds = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"
    dash = yaml.safe_load((provisioning / "dashboards" / "streamrec.yaml").read_text())
    assert dash["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
