"""A phase-fair read/write lock: many readers or one writer.

Writers wait for readers to leave and block new ones (so a stream of searches cannot starve catalogue
updates); when a writer leaves, every reader already waiting is let in before the next writer (so a long
upsert split into chunks cannot starve searches either).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._readers_waiting = 0
        self._read_grants = 0  # waiting readers admitted ahead of waiting writers
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            if self._writer or self._writers_waiting:
                self._readers_waiting += 1
                while self._writer or (self._writers_waiting and not self._read_grants):
                    self._cond.wait()
                self._readers_waiting -= 1
                if self._read_grants:
                    self._read_grants -= 1
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers and self._writers_waiting:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers or self._read_grants:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._read_grants = self._readers_waiting
                self._cond.notify_all()
