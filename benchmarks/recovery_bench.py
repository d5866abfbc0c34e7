"""How long recovery takes, measured on the real broker: a worker SIGKILLed mid-stream and restarted with the same
data dir and app id, and a survivor taking over a SIGKILLed peer's partitions.

    python -m benchmarks.recovery_bench --note "quiet machine"              # both scenarios
    python -m benchmarks.recovery_bench --scenario restart --items 400

For each run: seconds from the restart (or the kill) to the first recommendation produced by the new owner,
to readiness, and to the last event answered; events lost (must be 0) and answered twice (at-least-once).
Writes ``recovery_<time>.{json,png}`` (machine, CPU flags, load, parameters, runs) into ``--out`` (default
``~/.cache/streamrec/bench``); the reference run the README cites is ``benchmarks/results/recovery.{json,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from streamrec.streams.delivery import all_delivered
from streamrec.testing import WorkerProcess, start_worker, unique_name

DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"
NOUNS = ["shoes", "teapot", "tent", "novel", "charger", "mug", "jacket", "lamp", "backpack", "headphones"]
ADJECTIVES = ["red", "light", "ceramic", "wireless", "vintage", "compact", "waterproof", "organic", "smart", "large"]


def machine(note: str) -> dict[str, Any]:
    cpu, flags = platform.processor() or "unknown", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in have)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "loadavg_before": list(os.getloadavg()),
        "note": note,
    }


def catalogue(n: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(0)
    return [
        (
            f"sku-{i}".encode(),
            json.dumps(
                {
                    "item_id": f"sku-{i}",
                    "title": f"{rnd.choice(ADJECTIVES)} {rnd.choice(ADJECTIVES)} {rnd.choice(NOUNS)} model {i}",
                }
            ).encode(),
        )
        for i in range(n)
    ]


def events(n: int, items: int, users: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(1)
    out = []
    for i in range(n):
        user = f"user{rnd.randrange(users)}"
        doc = {
            "user_id": user,
            "type": rnd.choice(["view", "view", "click", "add_to_cart"]),
            "item_id": f"sku-{rnd.randrange(items)}",
            "event_id": f"e{i}",
        }
        out.append((user.encode(), json.dumps(doc).encode()))
    return out


class Recorder:
    """Consumes the recommendations topic in the background: (event_id, arrival wall time) per message."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.got: list[tuple[str, float]] = []

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    self.got.extend((json.loads(r.value)["event_id"], now) for r in records)
        finally:
            await consumer.stop()

    def first_after(self, t: float) -> float | None:
        return min((at for _, at in self.got if at > t), default=None)


async def produce_paced(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float) -> dict[str, int]:
    """Send open loop at ``rate``; returns the partition of each event (by event id)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    futures = []
    try:
        for i, (key, value) in enumerate(records):
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
            futures.append(await producer.send(topic, key=key, value=value))
        await producer.flush()
        metas = await all_delivered(futures)  # not asyncio.gather: it would hold the loop the answers are read on
    finally:
        await producer.stop()
    return {json.loads(v)["event_id"]: m.partition for (_, v), m in zip(records, metas, strict=True)}


async def until(pred: Any, timeout_s: float = 300.0, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step_s)


async def wait_metric(worker: WorkerProcess, pred: Any, timeout_s: float = 300) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = await asyncio.to_thread(worker.metrics)
        if m and pred(m):
            return time.time()
        await asyncio.sleep(0.1)
    raise TimeoutError(worker.log_tail())


async def run_scenario(args: argparse.Namespace, scenario: str, model: Path, work: Path) -> dict[str, Any]:
    from streamrec.testing import produce

    topics = {
        "app_id": unique_name("rec-app"),
        "events_topic": unique_name("rec-events"),
        "items_topic": unique_name("rec-items"),
        "recommendations_topic": unique_name("rec-recs"),
        "dead_letter_topic": unique_name("rec-dlq"),
    }
    partitions = 1 if scenario == "restart" else 4
    env = {
        "STREAMREC_BOOTSTRAP": args.bootstrap,
        "STREAMREC_MODEL_DIR": str(model),
        "STREAMREC_DATA_DIR": str(work / scenario),
        "STREAMREC_PARTITIONS": str(partitions),
        "STREAMREC_SNAPSHOT_INTERVAL_S": str(args.snapshot_interval_s),
        **{f"STREAMREC_{k.upper()}": v for k, v in topics.items()},
    }
    names = ["w1"] if scenario == "restart" else ["a", "b"]
    workers = {n: start_worker({**env, "STREAMREC_WORKER_NAME": n}, work / f"{scenario}-{n}-1.log") for n in names}
    recorder = Recorder(args.bootstrap, topics["recommendations_topic"])
    rec_task = asyncio.create_task(recorder.run())
    try:
        await wait_metric(workers[names[0]], lambda m: "streamrec_index_ready" in m)
        await produce(args.bootstrap, topics["items_topic"], catalogue(args.items))
        for w in workers.values():
            await wait_metric(w, lambda m: m.get("streamrec_index_ready") == 1.0)
        if scenario == "takeover":
            for w in workers.values():
                await wait_metric(w, lambda m: 1 <= m.get("streamrec_kafka_assigned_partitions", 0) <= 3)
        evs = events(args.events, args.items, args.users)
        producer = asyncio.create_task(produce_paced(args.bootstrap, topics["events_topic"], evs, args.rate))
        kill_after = int(args.kill_at * len(evs))
        await until(lambda: len({e for e, _ in recorder.got}) >= kill_after)
        victim = names[0]
        workers[victim].kill()
        t_kill = time.time()
        result: dict[str, Any] = {"scenario": scenario, "answered_before_kill": len(recorder.got)}
        if scenario == "restart":
            await asyncio.sleep(args.restart_delay_s)
            t_restart = time.time()
            workers[victim] = start_worker(
                {**env, "STREAMREC_WORKER_NAME": victim}, work / f"{scenario}-{victim}-2.log"
            )
            t_ready = await wait_metric(workers[victim], lambda m: m.get("streamrec_index_ready") == 1.0)
            await until(lambda: recorder.first_after(t_restart) is not None)
            first = recorder.first_after(t_restart)
            assert first is not None
            result |= {
                "restart_to_ready_s": round(t_ready - t_restart, 2),
                "restart_to_first_recommendation_s": round(first - t_restart, 2),
            }
            t_ref = t_restart
        else:
            survivor = workers[names[1]]
            t_all = await wait_metric(survivor, lambda m: m.get("streamrec_kafka_assigned_partitions") == partitions)
            result |= {"kill_to_takeover_s": round(t_all - t_kill, 2)}
            t_ref = t_kill
        partition_of = await producer
        want = {json.loads(v)["event_id"] for _, v in evs}
        await until(lambda: want <= {e for e, _ in recorder.got}, step_s=0.2)
        got_ids = [e for e, _ in recorder.got]
        last_new = max(at for _, at in recorder.got)
        result |= {
            "events": len(want),
            "lost": len(want - set(got_ids)),
            "duplicates": len(got_ids) - len(set(got_ids)),
            "to_last_answer_s": round(last_new - t_ref, 2),
        }
        # per events partition: the first answer after the kill (a partition the victim owned stays silent
        # until its new owner -- the restarted worker or the survivor -- serves it)
        first_by_partition: dict[int, float] = {}
        for event_id, at in recorder.got:
            p = partition_of.get(event_id)
            if p is not None and at > t_kill + 0.2:
                first_by_partition[p] = min(at, first_by_partition.get(p, at))
        result["kill_to_first_answer_by_partition_s"] = {
            str(p): round(at - t_kill, 2) for p, at in sorted(first_by_partition.items())
        }
        return result
    finally:
        rec_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rec_task
        for w in workers.values():
            w.stop(timeout_s=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("STREAMREC_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--scenario", choices=["restart", "takeover", "both"], default="both")
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--rate", type=float, default=100.0, help="events/s, open loop")
    p.add_argument("--kill-at", type=float, default=0.4, help="SIGKILL once this share of events was answered")
    p.add_argument("--restart-delay-s", type=float, default=1.0)
    p.add_argument("--snapshot-interval-s", type=float, default=60.0)
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON and PNG")
    args = p.parse_args()
    from streamrec.commands.export import default_model_dir

    model = args.model_dir or default_model_dir()
    info = machine(args.note)
    runs = []
    with tempfile.TemporaryDirectory(prefix="streamrec-recovery-") as tmp:
        for scenario in ["restart", "takeover"] if args.scenario == "both" else [args.scenario]:
            r = asyncio.run(run_scenario(args, scenario, model, Path(tmp)))
            print(json.dumps(r))
            runs.append(r)
    info["loadavg_after"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"recovery_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps({"machine": info, "params": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2)
        + "\n"
    )
    plot(runs, out.with_suffix(".png"), info)
    print(f"wrote {out} and {out.with_suffix('.png').name}")


def plot(runs: list[dict[str, Any]], path: Path, info: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float]] = []
    for r in runs:
        if r["scenario"] == "restart":
            bars += [
                ("restart -> ready", r["restart_to_ready_s"]),
                ("restart -> first recommendation", r["restart_to_first_recommendation_s"]),
            ]
        else:
            by_partition = r["kill_to_first_answer_by_partition_s"]
            bars += [(f"kill -> partition {p} answered", s) for p, s in by_partition.items()]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(bars)))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:blue")
    for y, (_, v) in enumerate(bars):
        ax.text(v, y, f" {v:.1f} s", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(
        f"recovery after SIGKILL ({info['cpu']}, {info['cores']} cores, load {info['loadavg_before'][0]:.1f})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
