"""End-to-end latency through Kafka, against the floor (a bare aiokafka echo on the same broker).

    python -m benchmarks.e2e_bench --quick        # ~2 min: 1 worker + floor at 2 rates, a short search-heavy run
    python -m benchmarks.e2e_bench                # the sweep: 1 and 2 workers, search-heavy, batch/linger grid
    python -m benchmarks.e2e_bench --synthetic-items 100000   # + the 100k product-like catalogue (encoding it
                                                              #   takes the worker ~2.5-5 min on 2 cores)
    streamrec bench --quick                       # the same, as a streamrec command

Open loop: events are sent on a fixed schedule (event i at t0 + i / rate), never waiting for answers; a
concurrent consumer stamps each answer at receipt. Latency = receipt - send time (same host, same clock).
Per offered rate, first the floor (events -> echo process -> output topic), then the worker(s) (events ->
``streamrec worker`` -> recommendations), each with the same events, generator and consumer; the first
``warmup_s`` seconds of every step are excluded. The sweep stops after the first rate where p99 > 1 s,
answers are missing after the drain, or fewer than 90 % of the offered events/s are answered.

Writes ``e2e_<time>.json`` + ``.png`` into the output folder
(``--out``; default ``~/.cache/streamrec/bench``, outside git: the committed reference runs in
``benchmarks/results/`` are chosen by hand, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import e2e_data, e2e_report
from benchmarks.e2e_load import Collector, StepResult, parse_echo, parse_recommendation, prime, run_step
from streamrec.machine import machine
from streamrec.streams.movielens import ReplayEvent
from streamrec.streams.schemas import ItemRecord
from streamrec.streams.security import PLAINTEXT, KafkaSecurity

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path.home() / ".cache" / "streamrec" / "bench"  # outside git


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run (``streamrec bench`` has one flag and one STREAMREC_BENCH_* variable per field)."""

    bootstrap: str = "127.0.0.1:9092"
    quick: bool = False
    rates: str = ""  # offered events/s, comma-separated ("" = 100..4000; quick: 100,400)
    workers: str = ""  # worker counts to sweep ("" = 1,2; quick: 1)
    duration_s: float = 0.0  # seconds per step (0 = 12; quick 5)
    warmup_s: float = 0.0  # excluded from each step (0 = 2; quick 1)
    drain_s: float = 10.0
    search_mix: float = 0.1  # mixed workload: fraction of ratings preceded by a search event
    search_rates: str = ""  # search-heavy run ("" = 100,250,500,1000; quick 100; "off")
    grid: str = ""  # batch_max:linger_ms pairs ("" = 1:0,16:2,64:0,64:2,64:5,256:5; quick off; "off")
    grid_rate: float = 1000.0
    cdf_rate: float = 500.0
    synthetic_items: int = 0  # 0: off; e.g. 100000
    synthetic_rates: str = "100,500"
    partitions: int = 4
    batch_max: int = 256  # the worker's default STREAMREC_BATCH_MAX
    batch_linger_ms: float = 2.0
    model_dir: str = ""
    out: str = ""
    note: str = ""
    command: str = ""


def _floats(text: str, default: str) -> list[float]:
    text = text.strip() or default
    return [] if text == "off" else [float(x) for x in text.split(",") if x.strip()]


def _grid(text: str, default: str) -> list[tuple[int, float]]:
    text = text.strip() or default
    if text == "off":
        return []
    return [(int(a), float(b)) for a, b in (p.split(":") for p in text.split(",") if p.strip())]


@dataclass
class Plan:
    rates: list[float]
    workers: list[int]
    duration_s: float
    warmup_s: float
    search_rates: list[float]
    grid: list[tuple[int, float]]
    synthetic_rates: list[float]


def plan(c: BenchConfig) -> Plan:
    q = c.quick
    return Plan(
        rates=_floats(c.rates, "100,400" if q else "100,250,500,1000,1500,2000,3000,4000"),
        workers=[int(x) for x in _floats(c.workers, "1" if q else "1,2")],
        duration_s=c.duration_s or (5.0 if q else 12.0),
        warmup_s=c.warmup_s or (1.0 if q else 2.0),
        search_rates=_floats(c.search_rates, "100" if q else "100,250,500,1000"),
        grid=_grid(c.grid, "off" if q else "1:0,16:2,64:0,64:2,64:5,256:5"),
        synthetic_rates=_floats(c.synthetic_rates, "100,500") if c.synthetic_items else [],
    )


def _say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


async def _send_items(bootstrap: str, topic: str, items: Iterable[ItemRecord], security: KafkaSecurity) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5, **security.aiokafka_kwargs()
    )
    await producer.start()
    n = 0
    try:
        for item in items:
            await producer.send(topic, item.to_json_bytes(), key=item.item_id.encode())
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


def _worker_summary(metrics: dict[str, float]) -> dict[str, float | None]:
    def total(prefix: str) -> float:
        return sum(v for k, v in metrics.items() if k.startswith(prefix))

    hits = total('streamrec_encoder_cache_lookups_total{result="hit"}')
    lookups = total("streamrec_encoder_cache_lookups_total")
    batches = total("streamrec_pipeline_batch_size_events_count")
    return {
        "recommendations": total("streamrec_pipeline_recommendations_total"),
        "dead_letters": total("streamrec_pipeline_dead_letters_total"),
        "fallbacks": total("streamrec_pipeline_fallbacks_total"),
        "encoder_cache_hit_ratio": hits / lookups if lookups else None,
        "mean_batch_events": total("streamrec_pipeline_batch_size_events_sum") / batches if batches else 0.0,
        "encoder_calls": total("streamrec_encoder_inference_seconds_count"),
        **{f"gc_gen{g}_pauses": total(f'streamrec_python_gc_pause_seconds_count{{generation="{g}"}}') for g in "012"},
        **{f"gc_gen{g}_pause_s": total(f'streamrec_python_gc_pause_seconds_sum{{generation="{g}"}}') for g in "012"},
    }


@dataclass
class Phase:
    """One configuration: fresh topics and app id, N workers (and the echo), a list of rates."""

    name: str
    items: Iterable[ItemRecord]
    events: list[ReplayEvent]
    rates: list[float]
    n_workers: int = 1
    floor: bool = False
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    ready_timeout_s: float = 300.0


async def run_phase(c: BenchConfig, p: Plan, ph: Phase, security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from streamrec.commands.export import default_model_dir
    from streamrec.testing import create_topics, delete_topics, security_environment, start_worker, unique_name

    rid = unique_name(f"bench-{ph.name}")
    t = {k: f"{rid}-{k}" for k in ("events", "items", "recs", "dlq", "floor-in", "floor-out")}
    parts = c.partitions
    create_topics(
        c.bootstrap, {t[k]: parts for k in ("events", "recs", "dlq", "floor-in", "floor-out")}, security=security
    )
    create_topics(c.bootstrap, {t["items"]: 2}, {"cleanup.policy": "compact"}, security=security)
    data_dir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    workers: list[Any] = []
    echo: subprocess.Popen[str] | None = None
    collectors: list[Collector] = []
    producer: Any = None
    out: dict[str, Any] = {"name": ph.name, "workers": ph.n_workers, "env": ph.env, "steps": [], "floor_steps": []}
    try:
        t0 = time.monotonic()
        n_items = await _send_items(c.bootstrap, t["items"], ph.items, security)
        env = {
            "STREAMREC_BOOTSTRAP": c.bootstrap,
            "STREAMREC_APP_ID": rid,
            "STREAMREC_EVENTS_TOPIC": t["events"],
            "STREAMREC_ITEMS_TOPIC": t["items"],
            "STREAMREC_RECOMMENDATIONS_TOPIC": t["recs"],
            "STREAMREC_DEAD_LETTER_TOPIC": t["dlq"],
            "STREAMREC_PARTITIONS": str(parts),
            "STREAMREC_DATA_DIR": str(data_dir),
            "STREAMREC_MODEL_DIR": c.model_dir or str(default_model_dir()),
            "STREAMREC_BATCH_MAX": str(c.batch_max),
            "STREAMREC_BATCH_LINGER_MS": str(c.batch_linger_ms),
            "HF_HUB_OFFLINE": "1",
            **security_environment(security),
            **ph.env,
        }
        for i in range(ph.n_workers):
            workers.append(start_worker({**env, "STREAMREC_WORKER_NAME": f"w{i}"}, data_dir / f"worker{i}.log"))
        _say(f"{ph.name}: {ph.n_workers} worker(s) indexing {n_items} items (logs: {data_dir})")
        for w in workers:
            await asyncio.to_thread(
                w.wait_until,
                lambda m: m.get("streamrec_index_ready") == 1.0 and m.get("streamrec_index_items") == n_items,
                ph.ready_timeout_s,
                "the catalogue indexed",
            )
        out["catalogue"] = {"items": n_items, "ready_s": time.monotonic() - t0}
        if ph.floor:
            echo = await asyncio.to_thread(
                _start_echo, c.bootstrap, t["floor-in"], t["floor-out"], parts, security_environment(security)
            )
        producer = AIOKafkaProducer(
            bootstrap_servers=c.bootstrap,
            enable_idempotence=True,
            acks="all",
            **security.aiokafka_kwargs(),
            linger_ms=0,
        )
        await producer.start()
        recs = Collector(c.bootstrap, t["recs"], parts, parse_recommendation, security.aiokafka_kwargs())
        floor = Collector(c.bootstrap, t["floor-out"], parts, parse_echo, security.aiokafka_kwargs())
        for col in (recs, floor) if ph.floor else (recs,):
            await col.start()
            collectors.append(col)
        if ph.n_workers > 1:  # every partition assigned before the load starts
            await asyncio.to_thread(_wait_assigned, workers, parts, 120.0)
        cursor = {"w": 0, "f": 0}

        def take(who: str, n: int) -> list[ReplayEvent]:
            evs = e2e_data.cycled(ph.events, cursor[who], n)
            cursor[who] += n
            return evs

        out["prime_s"] = await prime(producer, recs, t["events"], take("w", 20), 180.0)
        if ph.floor:
            await prime(producer, floor, t["floor-in"], take("f", 20), 60.0)
        for rate in ph.rates:
            n = int(rate * p.duration_s)
            kw = {"rate": rate, "duration_s": p.duration_s, "warmup_s": p.warmup_s, "drain_s": c.drain_s}
            if ph.floor:
                cpu = _CpuMeter([echo.pid] if echo is not None else [])
                fs = await run_step(producer, floor, t["floor-in"], take("f", n), **kw)
                out["floor_steps"].append({**_step_json(fs, None), "cpu": cpu.done(n)})
                _say(f"{ph.name}: floor   @{rate:6.0f}/s  {e2e_report.brief(fs)}")
            load = os.getloadavg()[0]
            cpu = _CpuMeter([w.proc.pid for w in workers])
            ws = await run_step(producer, recs, t["events"], take("w", n), **kw)
            ref = out["floor_steps"][-1] if ph.floor else None
            out["steps"].append({**_step_json(ws, ref), "loadavg_1m": load, "cpu": cpu.done(n)})
            _say(f"{ph.name}: worker  @{rate:6.0f}/s  {e2e_report.brief(ws)}")
            if ws.saturated:
                _say(f"{ph.name}: saturated at {rate:.0f}/s; stopping this sweep")
                break
        out["worker_metrics"] = [_worker_summary(w.metrics()) for w in workers]
        out["collector"] = {"duplicates": recs.duplicates, "undecodable": recs.errors}
        return out
    finally:
        for col in collectors:
            await col.stop()
        if producer is not None:
            await producer.stop()
        if echo is not None:
            await asyncio.to_thread(_stop_echo, echo)
        for w in workers:
            await asyncio.to_thread(w.stop)
        delete_topics(c.bootstrap, [*t.values(), f"{rid}-sessions-changelog"], security=security)
        failed = any(w.proc.returncode not in (0, None) for w in workers)
        if not failed:
            shutil.rmtree(data_dir, ignore_errors=True)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """The live processes started by ``pid`` (a worker's co-visitation owner process), recursively."""
    out: list[int] = []
    with contextlib.suppress(OSError):  # the process ended
        for task in list(Path(f"/proc/{pid}/task").iterdir()):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                out += [int(c) for c in (task / "children").read_text().split()]
    return out + [d for c in out for d in _descendants(c)]


def _cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        with contextlib.suppress(OSError):  # exited meanwhile
            out[p] = _cpu_s(p)
    return out


class _CpuMeter:
    """CPU used during a step by the server processes (worker(s) or echo) AND the processes they started (the
    worker's co-visitation owner process, ``STREAMREC_COVISIT_OWNER=process``: also reported on its own), and by
    this load generator. A child that exits during the step is counted up to its last sample only."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.wall = pids, time.monotonic()
        self.servers = _cpu_by_pid(pids)
        self.children = _cpu_by_pid(c for p in pids for c in _descendants(p))
        self.own = sum(os.times()[:2])

    def done(self, events: int) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        servers = sum(v - self.servers.get(p, 0.0) for p, v in _cpu_by_pid(self.pids).items())
        children_now = _cpu_by_pid(c for p in self.pids for c in _descendants(p))
        children = sum(v - self.children.get(p, 0.0) for p, v in children_now.items())
        own = sum(os.times()[:2]) - self.own
        return {
            "server_cpu_ms_per_event": 1000 * (servers + children) / events,
            "server_cores_busy": (servers + children) / wall,
            "children_cpu_ms_per_event": 1000 * children / events,
            "children": len(children_now),
            "generator_cpu_ms_per_event": 1000 * own / events,
            "wall_s": wall,
        }


def _start_echo(
    bootstrap: str, source: str, sink: str, partitions: int, security_env: dict[str, str]
) -> subprocess.Popen[str]:
    """The floor's echo in its own process (like a worker); returns once it reads its partitions."""
    from streamrec.testing import subprocess_environment

    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.e2e_echo",
            "--bootstrap",
            bootstrap,
            "--source",
            source,
            "--sink",
            sink,
            "--partitions",
            str(partitions),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={
            **subprocess_environment(security_env),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        },
    )
    assert echo.stdout is not None
    if echo.stdout.readline().strip() != "ready":
        _stop_echo(echo)
        raise RuntimeError(f"the floor echo did not start (exit {echo.returncode})")
    return echo


def _stop_echo(echo: subprocess.Popen[str]) -> None:
    echo.terminate()
    try:
        echo.wait(10)
    except subprocess.TimeoutExpired:
        echo.kill()
        echo.wait()


def _wait_assigned(workers: list[Any], parts: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(w.metrics().get("streamrec_kafka_assigned_partitions", 0.0) for w in workers) != parts:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not share all {parts} events partitions in {timeout_s:.0f} s")
        time.sleep(0.5)


def _step_json(s: StepResult, floor: dict[str, Any] | None) -> dict[str, Any]:
    d = s.to_json()
    if floor is not None and floor["latency_ms"] and s.latency_ms:
        d["ratio_to_floor"] = {k: s.latency_ms[k] / floor["latency_ms"][k] for k in ("p50", "p95", "p99")}
    return d


async def run_bench(c: BenchConfig, security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    p = plan(c)
    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "e2e",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": c.command or "python -m benchmarks.e2e_bench",
        "machine": machine(c.note),
        "versions": e2e_report.versions(),
        "settings": dataclasses.asdict(c),
        "plan": dataclasses.asdict(p),
        # worker settings given through this process's environment (e.g. STREAMREC_COVISIT_OWNER=inline)
        "worker_environment": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith("STREAMREC_") and not k.startswith(("STREAMREC_BENCH_", "STREAMREC_KAFKA_"))
        },
        "kafka_security": security.describe(),
    }
    ml_items = e2e_data.movielens_items()
    mixed = e2e_data.movielens_events(c.search_mix)
    result["sweeps"] = {}
    for n in p.workers:
        ph = Phase(f"workers{n}", ml_items, mixed, p.rates, n_workers=n, floor=True)
        result["sweeps"][f"workers_{n}"] = await run_phase(c, p, ph, security)
    result["floor"] = {
        "what": "bare aiokafka echo process (consume -> produce, acks=all, no linger), same broker, generator "
        "and consumer; measured just before the worker at each rate",
        "steps": e2e_report.merged_floor(result["sweeps"]),
        "by_phase": {k: v["floor_steps"] for k, v in result["sweeps"].items()},
    }
    if p.search_rates:
        ph = Phase("search", ml_items, e2e_data.search_events(), p.search_rates, floor=False)
        result["search_heavy"] = await run_phase(c, p, ph, security)
        e2e_report.add_floor_ratios(result["search_heavy"], result["floor"]["steps"])
    result["batch_grid"] = []
    for bm, linger in p.grid:
        env = {"STREAMREC_BATCH_MAX": str(bm), "STREAMREC_BATCH_LINGER_MS": str(linger)}
        ph = Phase(f"grid-b{bm}-l{linger:g}", ml_items, mixed, [c.grid_rate], env=env)
        r = await run_phase(c, p, ph, security)
        result["batch_grid"].append({"batch_max": bm, "batch_linger_ms": linger, **r})
        e2e_report.add_floor_ratios(r, result["floor"]["steps"])
    if c.synthetic_items:
        ph = Phase(
            "synthetic",
            e2e_data.synthetic_items(c.synthetic_items),
            e2e_data.synthetic_events(c.synthetic_items, c.search_mix),
            p.synthetic_rates,
            ready_timeout_s=1800.0,
        )
        result["synthetic"] = await run_phase(c, p, ph, security)
        e2e_report.add_floor_ratios(result["synthetic"], result["floor"]["steps"])
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    result["seconds"] = time.time() - started
    result["targets"] = e2e_report.targets(result)
    result["cdf_rate"] = c.cdf_rate
    return result


def main(
    argv: Sequence[str] | None = None, config: BenchConfig | None = None, security: KafkaSecurity = PLAINTEXT
) -> int:
    """Run the benchmark (from ``config``, else from command-line flags), write JSON + PNG, print the table."""
    if config is None:
        ap = argparse.ArgumentParser(
            description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        for f in dataclasses.fields(BenchConfig):
            flag = "--" + f.name.replace("_", "-")
            if f.type in (bool, "bool"):
                ap.add_argument(flag, action="store_true")
            else:
                ap.add_argument(flag, type=type(f.default), default=f.default)
        args = ap.parse_args(argv)
        given = vars(args)
        given["command"] = given["command"] or "python -m benchmarks.e2e_bench " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        config = BenchConfig(**given)
    result = asyncio.run(run_bench(config, security))
    out = Path(config.out).expanduser() if config.out else DEFAULT_OUT
    paths = e2e_report.write(result, out)
    print(e2e_report.table(result))
    _say(f"wrote {', '.join(str(x) for x in paths)} in {result['seconds']:.0f} s")
    return 0 if e2e_report.complete(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
