"""Item titles: one writer (the catalogue replica), readers on any thread."""

from __future__ import annotations

import threading

from streamrec.streams.titles import ItemTitles


def test_apply_sets_then_deletes_and_copies_are_snapshots() -> None:
    t = ItemTitles({"a": "A"})
    t.apply([("b", "B"), ("c", "C")], deletes=["a", "missing"])
    assert dict(t) == {"b": "B", "c": "C"} and t.get("a") is None and "b" in t and len(t) == 2
    snap = t.copy()
    t.apply([("d", "D")])
    assert "d" not in snap


def test_readers_in_other_threads_never_fail_while_the_writer_applies() -> None:
    t = ItemTitles()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                for i in range(200):
                    v = t.get(f"i{i}")
                    assert v is None or v == f"title {i}"
                list(t)  # iteration works on a snapshot: no "dictionary changed size during iteration"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for _ in range(300):
        t.apply((f"i{i}", f"title {i}") for i in range(200))
        t.apply(deletes=(f"i{i}" for i in range(0, 200, 2)))
    stop.set()
    for r in readers:
        r.join()
    assert not errors
