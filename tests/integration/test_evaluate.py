"""``streamrec evaluate`` both ways on a small MovieLens slice: offline (the core in-process) and end to end
through Kafka (a real worker, the recommendation messages scored), and the two agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.streams.evaluation import movielens_log
from streamrec.streams.evaluation.core_adapter import core_candidates
from streamrec.streams.evaluation.live import LiveConfig, agreement, live_result, run_live
from streamrec.streams.evaluation.suite import EvaluationPlan, evaluate_log
from streamrec.streams.settings import WorkerSettings
from streamrec.testing import KafkaForTests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = 10


def test_offline_and_through_kafka_agree(kafka: KafkaForTests, exported_model: Path, tmp_path: Path) -> None:
    log = movielens_log(users=30, max_events=40, seed=0)
    settings = WorkerSettings(model_dir=exported_model, provider="cpu", bootstrap=kafka.bootstrap)
    plan = EvaluationPlan(k=K, baselines=("popularity",), bootstrap_rounds=300)  # batches of 64, as evaluate's default
    ev = evaluate_log(log, plan, core_candidates(log, settings, [settings.strategy], k=K), progress=lambda _: None)
    offline, popularity = ev.results

    run = run_live(
        log,
        LiveConfig(
            bootstrap=kafka.bootstrap,
            work_dir=tmp_path,
            # The graph's lag through Kafka is a time (publish, the owner, the replica); in events it is that
            # time x the rate, and it grows when the machine is loaded. At 250/s with two busy-loop processes
            # on a 2-core machine the difference below reached -0.034 (4 of 5 runs past the bound); at 100/s,
            # same load: -0.001 to +0.005 in 5 of 5.
            rate=100.0,
            partitions=2,
            worker_env={
                "STREAMREC_MODEL_DIR": str(exported_model),
                "STREAMREC_PROVIDER": "cpu",
                "STREAMREC_K": str(K),
                "STREAMREC_STRATEGY": settings.strategy,
                # the worker serves co-visitation rows once they are published (every flush interval, 5 s by
                # default): on a slice this short it would be served from an almost empty graph (measured at
                # 250/s: HR@10 0.053 through Kafka vs 0.13 offline). Publishing every 0.2 s brings the
                # worker's lag near the offline one (one batch).
                "STREAMREC_COVISIT_FLUSH_INTERVAL_S": "0.2",
            },
        ),
    )
    assert (run.sent, run.answered, run.undecodable) == (len(log.events), len(log.events), 0)
    assert run.strategies == {settings.strategy: len(log.events)}
    live = live_result(log, ev.points, run, k=K, name="kafka", params={})
    a = agreement(live, offline, k=K, rounds=300, seed=0)
    assert a["missing"] == 0
    # The same recommender on the same points: the same quality within a few hundredths of HR@10, and mostly
    # the same items. Not identical: the worker embeds the catalogue in other batches (dynamic INT8 scales
    # depend on the batch, so cosine scores move by ~0.3 %), its micro-batches follow arrival, and its
    # co-visitation graph learns through Kafka, later than offline (on a slice this small the graph is sparse and
    # that lag shows; on all of MovieLens-100K +0.0007 [-0.0001, 0.0016]).
    hr = a["kafka_minus_offline"]["hr"]
    assert abs(hr["diff"]) <= 0.03, a
    assert a["mean_top_k_overlap"] >= 0.6, a
    # ... and that closeness is specific: another recommender's lists (popularity) overlap far less
    other = agreement(live, popularity, k=K, rounds=300, seed=0)
    assert other["mean_top_k_overlap"] < a["mean_top_k_overlap"] - 0.3, (a, other)
