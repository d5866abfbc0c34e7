"""Concurrent searches beside one writer that upserts, updates, deletes, toggles availability, resizes and saves.

hnswlib alone segfaults when resize_index runs under knn_query and returns spurious errors when add_items
does; through the index's read/write lock none of that may happen, and an id whose delete has returned is
never returned again.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from streamrec.index import HnswIndex
from streamrec.index._rwlock import RWLock
from tests.unit.index.conftest import clustered, ids

DIM = 32


def test_searches_beside_a_writer(tmp_path: Path) -> None:
    index = HnswIndex(DIM, initial_capacity=16, write_chunk=16, ef_construction=64)
    pool = clustered(30_000, DIM, spread=0.5)
    index.upsert(ids("p", 400), pool[:400])
    gone: set[str] = set()
    gone_lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    checked = [0]

    def writer() -> None:
        rng = np.random.default_rng(1)
        live = ids("p", 400)
        nxt = 400
        try:
            t_end = time.monotonic() + 2.5
            step = 0
            while time.monotonic() < t_end and nxt + 100 < len(pool):
                new = ids("p", 60, nxt)
                index.upsert(new, pool[nxt : nxt + 60])  # inserts, with resizes as capacity doubles
                live += new
                nxt += 60
                victims = [live.pop(int(rng.integers(len(live)))) for _ in range(30)]
                index.delete(victims)
                with gone_lock:
                    gone.update(victims)
                upd = [live[int(i)] for i in rng.integers(0, len(live), 20)]
                index.upsert(upd, pool[rng.integers(0, len(pool), 20)])
                flip = [live[int(i)] for i in rng.integers(0, len(live), 10)]
                index.set_available(flip, False)
                index.set_available(flip, True)
                index.reserve(index.stats().capacity + 512)  # a resize under running searches
                if step % 25 == 0:
                    index.save(tmp_path, extra={"step": step})
                step += 1
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with gone_lock:
                    done = set(gone)
                q = pool[rng.integers(0, 400, 32)] + 0.1 * rng.standard_normal((32, DIM)).astype(np.float32)
                exclude = [set(ids("p", 5, int(rng.integers(0, 400)))) for _ in range(32)] if seed == 3 else None
                for h in index.search(q, k=10, exclude=exclude):
                    assert len(h) == 10, f"got {len(h)} results"
                    assert not done & set(h.ids), f"deleted ids returned: {done & set(h.ids)}"
                    checked[0] += 1
        except BaseException as e:
            errors.append(e)
            stop.set()

    with ThreadPoolExecutor(5) as ex:
        futures = [ex.submit(searcher, s) for s in range(4)] + [ex.submit(writer)]
        for f in futures:
            f.result()
    assert not errors, errors[0]
    s = index.stats()
    assert s.resizes_total >= 4 and s.deletes_total == len(gone) > 100
    assert checked[0] > 200, "the searchers ran alongside the writer"
    loaded, extra = HnswIndex.load(tmp_path)
    assert isinstance(extra["step"], int) and len(loaded) > 0


def test_rwlock_readers_share_writer_excludes() -> None:
    lock = RWLock()
    both_in = threading.Barrier(2, timeout=2)

    def reader() -> None:
        with lock.read():
            both_in.wait()  # raises BrokenBarrierError if readers could not be inside together

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entered = threading.Event()

    def late_reader() -> None:
        with lock.read():
            entered.set()

    with lock.write():
        t = threading.Thread(target=late_reader)
        t.start()
        assert not entered.wait(0.1), "a reader got in while the writer held the lock"
    assert entered.wait(2)
    t.join()


def test_rwlock_chunked_writer_does_not_starve_a_reader() -> None:
    lock = RWLock()
    chunks_done = [0]
    reader_saw: list[int] = []
    writing = threading.Event()

    def writer() -> None:
        for _ in range(40):
            with lock.write():
                writing.set()
                time.sleep(0.005)
            chunks_done[0] += 1

    def reader() -> None:
        writing.wait()
        with lock.read():
            reader_saw.append(chunks_done[0])

    tw, tr = threading.Thread(target=writer), threading.Thread(target=reader)
    tw.start()
    tr.start()
    tw.join()
    tr.join()
    assert reader_saw and reader_saw[0] < 5, f"reader waited for {reader_saw} writer chunks"
