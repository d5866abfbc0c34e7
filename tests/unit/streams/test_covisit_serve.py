"""Scoring in the owner process: the wire, the same lists as local scoring over a real Unix socket, and the
fallback to local scoring whenever the owner does not answer (not there, gone, too slow, malformed)."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path

import pytest

from streamrec.streams.covisit import CovisitConfig, CovisitGraph, DeltaBatch, fetch_for
from streamrec.streams.covisit_serve import (
    RemoteScorer,
    ScoreServer,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

Users = list[tuple[Sequence[str], Collection[str]]]


def _graph(seed: int = 3, n_users: int = 60, n_items: int = 80) -> tuple[CovisitGraph, Users]:
    """A served graph (published rows, as a replica holds them) learned from random sessions, and users."""
    rng = random.Random(seed)
    cfg = CovisitConfig(half_life_s=1e12)
    learner = CovisitGraph(cfg)
    sessions = [[f"i{rng.randrange(n_items)}" for _ in range(rng.randrange(2, 15))] for _ in range(n_users)]
    for items in sessions:
        batch = DeltaBatch(cfg)
        previous: list[str] = []
        for item in items:
            batch.observe(item, 1.0, 0.0, previous)
            previous = [item, *[p for p in previous if p != item]]
        learner.apply(batch.deltas())
    served = CovisitGraph(cfg)
    served.put_rows([r for item in list(learner._rows) if (r := learner.row(item)) is not None])
    users: Users = []
    for items in sessions:
        recent = list(dict.fromkeys(reversed(items)))
        users.append((recent, set(recent[:3])))  # exclude a few, as the core does
    users.append(([], set()))  # a user with no history
    users.append((["unknown-item"], set()))  # and one whose items have no row
    return served, users


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ScoreServer, str]]:
    graph, _ = _graph()
    path = str(tmp_path / "scores.sock")
    server = ScoreServer(graph, path)
    await server.start()
    try:
        yield server, path
    finally:
        await server.stop()


def test_the_wire_round_trips() -> None:
    recents = [["a", "b"], [], ["ünï", "c", "d"]]
    assert decode_request(encode_request(12.5, 70, recents)) == (12.5, 70, recents)
    ranked = [(["x", "y"], [2.0, 1.0]), ([], []), (["é"], [0.5])]
    assert decode_response(encode_response(ranked), 3) == ranked


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\0",  # trailing bytes
        lambda b: b"\x02" + b[1:],  # another version
    ],
)
def test_malformed_messages_are_refused(damage) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        decode_request(damage(encode_request(1.0, 10, [["a"], ["b", "c"]])))
    with pytest.raises(ValueError):
        decode_response(damage(encode_response([(["a"], [1.0])])), 1)


def test_an_answer_for_another_number_of_users_or_with_a_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_response(encode_response([(["a"], [1.0])]), 2)
    with pytest.raises(ValueError):
        decode_response(encode_response([(["a"], [float("nan")])]), 1)
    with pytest.raises(ValueError):
        decode_request(encode_request(float("inf"), 10, [["a"]]))


async def test_the_owner_scores_what_local_scoring_would(served: tuple[ScoreServer, str]) -> None:
    server, path = served
    graph, users = _graph()  # the same rows, in another graph: the worker's own replica
    scored: list[tuple[str, int]] = []
    remote = RemoteScorer(path, graph, timeout_s=2.0, on_scored=lambda by, n: scored.append((by, n)))
    for limit in (5, 30):
        got = await asyncio.to_thread(remote.scores_many, users, 100.0, limit)
        want = graph.scores_many(users, 100.0, limit)
        assert got == want  # the same candidates, order and scores, exclusions applied
    assert any(got) and scored == [("owner", len(users)), ("owner", len(users))]
    assert server.served == 2 * len(users)
    remote.close()


async def test_only_the_recent_items_that_serve_are_sent(
    served: tuple[ScoreServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = served
    graph, _ = _graph()
    sent: list[bytes] = []
    remote = RemoteScorer(path, graph, timeout_s=2.0)
    long = [f"i{j}" for j in range(40)]
    original = encode_request

    def spy(now_s: float, fetch: int, recents: Sequence[Sequence[str]]) -> bytes:
        out = original(now_s, fetch, recents)
        sent.append(out)
        return out

    monkeypatch.setattr("streamrec.streams.covisit_serve.encode_request", spy)
    await asyncio.to_thread(remote.scores_many, [(long, set())], 1.0, 10)
    _, fetch, recents = decode_request(sent[0])
    assert recents == [long[: graph.config.sources]] and fetch == fetch_for(10)
    remote.close()


async def test_without_an_owner_the_worker_scores_locally_and_counts_it(tmp_path: Path) -> None:
    graph, users = _graph()
    scored: list[tuple[str, int]] = []
    remote = RemoteScorer(str(tmp_path / "none.sock"), graph, on_scored=lambda by, n: scored.append((by, n)))
    got = await asyncio.to_thread(remote.scores_many, users, 100.0, 10)
    assert got == graph.scores_many(users, 100.0, 10)
    assert scored == [("local", len(users))]


async def test_an_owner_that_goes_away_and_comes_back_is_used_again(tmp_path: Path) -> None:
    graph, users = _graph()
    path = str(tmp_path / "scores.sock")
    scored: list[str] = []
    remote = RemoteScorer(path, graph, timeout_s=2.0, retry_s=0.05, on_scored=lambda by, n: scored.append(by))
    server = ScoreServer(_graph()[0], path)
    await server.start()
    await asyncio.to_thread(remote.scores_many, users, 1.0, 10)
    await server.stop()  # the owner process restarts
    await asyncio.to_thread(remote.scores_many, users, 1.0, 10)  # the connection is gone: local
    server = ScoreServer(_graph()[0], path)
    await server.start()
    await asyncio.sleep(0.2)  # past the retry backoff
    got = await asyncio.to_thread(remote.scores_many, users, 1.0, 10)
    await server.stop()
    assert scored == ["owner", "local", "owner"]
    assert got == graph.scores_many(users, 1.0, 10)
    remote.close()


async def test_a_slow_owner_is_not_waited_for_past_the_timeout(tmp_path: Path) -> None:
    graph, users = _graph()
    path = str(tmp_path / "slow.sock")

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_unix_server(never_answers, path=path)
    scored: list[str] = []
    remote = RemoteScorer(path, graph, timeout_s=0.2, on_scored=lambda by, n: scored.append(by))
    t0 = time.monotonic()
    got = await asyncio.to_thread(remote.scores_many, users, 1.0, 10)
    waited = time.monotonic() - t0
    server.close()
    assert got == graph.scores_many(users, 1.0, 10) and scored == ["local"]
    assert waited < 2.0  # 0.2 s and the local scoring, not the 5 s the owner takes
    assert remote.failures == 1
    remote.close()


async def test_a_malformed_request_closes_only_its_connection(served: tuple[ScoreServer, str]) -> None:
    server, path = served
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(struct.pack("<I", 3) + b"bad")
    await writer.drain()
    assert await reader.read() == b""  # closed by the server
    writer.close()
    assert server.invalid == 1
    graph, users = _graph()
    remote = RemoteScorer(path, graph, timeout_s=2.0)
    assert await asyncio.to_thread(remote.scores_many, users, 1.0, 10) == graph.scores_many(users, 1.0, 10)
    remote.close()


async def test_the_socket_is_private_to_its_user(served: tuple[ScoreServer, str]) -> None:
    _, path = served
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_socket_directories_of_killed_workers_are_swept_and_nothing_else(tmp_path: Path) -> None:
    """A worker killed by SIGKILL (or the OOM killer) cannot remove its socket directory; the next worker on the host
    removes those whose process is gone, and only those."""
    import subprocess
    import sys

    from streamrec.streams.covisit_serve import SERVE_DIR_PREFIX, SOCKET_NAME, new_serve_dir, sweep_stale_serve_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = int(gone.stdout)
    root = tmp_path

    def made(name: str, *files: str) -> Path:
        d = root / name
        d.mkdir()
        for f in files:
            (d / f).write_text("")
        return d

    stale_empty = made(f"{SERVE_DIR_PREFIX}{dead}-abc1")
    stale_with_socket_path = made(f"{SERVE_DIR_PREFIX}{dead}-abc2", SOCKET_NAME)
    kept = [
        made(f"{SERVE_DIR_PREFIX}{dead}-abc3", SOCKET_NAME, "notes.txt"),  # holds more than the socket
        made(f"{SERVE_DIR_PREFIX}{os.getppid()}-abc4"),  # its worker is alive
        made(f"{SERVE_DIR_PREFIX}{os.getpid()}-abc5"),  # ours
        made(f"{SERVE_DIR_PREFIX}abc6"),  # an older version's name, no pid: left alone
        made(f"{SERVE_DIR_PREFIX}x{dead}-abc7"),
        made(f"other-{dead}-abc8"),
    ]
    (root / f"{SERVE_DIR_PREFIX}{dead}-file").write_text("")  # a file, not a directory
    assert sweep_stale_serve_dirs(str(root)) == 2
    assert not stale_empty.exists() and not stale_with_socket_path.exists()
    assert all(d.exists() for d in kept) and (root / f"{SERVE_DIR_PREFIX}{dead}-file").exists()

    made(f"{SERVE_DIR_PREFIX}{dead}-abc9")
    fresh = Path(new_serve_dir(str(root)))  # sweeps first, then makes its own, named after this process
    assert not (root / f"{SERVE_DIR_PREFIX}{dead}-abc9").exists()
    assert fresh.name.startswith(f"{SERVE_DIR_PREFIX}{os.getpid()}-") and fresh.stat().st_mode & 0o777 == 0o700
    assert sweep_stale_serve_dirs(str(root / "missing")) == 0
