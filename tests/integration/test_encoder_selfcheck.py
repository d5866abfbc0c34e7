"""A real worker whose CPU INT8 variant fails its load-time self-check: it serves fp32 and its metrics say
why; with the strict setting it refuses to start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.testing import KafkaForTests, delete_topics, start_worker, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def bad_int8_model(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streamrec.export.testing import with_failing_cpu_variant

    return with_failing_cpu_variant(exported_model, tmp_path_factory.mktemp("bad-int8") / "model")


@pytest.fixture
def worker_env(kafka: KafkaForTests, bad_int8_model: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    names = {k: unique_name(f"selfcheck-{k}") for k in ("app", "events", "items", "recs", "dlq")}
    yield {
        "STREAMREC_BOOTSTRAP": kafka.bootstrap,
        "STREAMREC_MODEL_DIR": str(bad_int8_model),
        "STREAMREC_DATA_DIR": str(tmp_path / "w"),
        "STREAMREC_APP_ID": names["app"],
        "STREAMREC_EVENTS_TOPIC": names["events"],
        "STREAMREC_ITEMS_TOPIC": names["items"],
        "STREAMREC_RECOMMENDATIONS_TOPIC": names["recs"],
        "STREAMREC_DEAD_LETTER_TOPIC": names["dlq"],
        "STREAMREC_PARTITIONS": "1",
        "STREAMREC_ITEMS_PARTITIONS": "1",
    }
    delete_topics(kafka.bootstrap, [names[k] for k in ("events", "items", "recs", "dlq")])


def test_the_worker_falls_back_to_fp32_and_its_metric_says_why(worker_env: dict[str, str], tmp_path: Path) -> None:
    worker = start_worker(worker_env, tmp_path / "worker.log")
    try:
        metrics = worker.wait_until(
            lambda m: any(k.startswith("streamrec_encoder_info{") for k in m), what="the encoder info metric"
        )
        info = next(k for k in metrics if k.startswith("streamrec_encoder_info{"))
        assert 'variant="fp32"' in info and 'self_check="fallback"' in info, info
        assert 'fallback_from="cpu-int8"' in info and 'fallback_reason="cpu-int8: cosine mean' in info, info
        assert metrics['streamrec_encoder_self_check_cosine{stat="mean",variant="cpu-int8"}'] < 0.995
        assert metrics['streamrec_encoder_self_check_cosine{stat="mean",variant="fp32"}'] > 0.9999
        log = worker.log_tail(400)
        assert "WARNING" in log and "cpu-int8 fails its self-check" in log
    finally:
        assert worker.stop() == 0


def test_strict_self_check_refuses_to_start(worker_env: dict[str, str], tmp_path: Path) -> None:
    worker = start_worker({**worker_env, "STREAMREC_ENCODER_SELF_CHECK": "strict"}, tmp_path / "worker.log")
    try:
        rc = worker.proc.wait(180)
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    log = worker.log_tail(50)
    assert rc == 2, log
    assert "streamrec worker: error:" in log and "cpu-int8 fails its self-check" in log and "strict" in log
