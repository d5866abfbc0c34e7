"""Item titles: the catalogue's text for items, read by the hot path to embed items the index lacks.

One owner, one rule:

* **writer**: the catalogue replica (:class:`~streamrec.streams.catalog.CatalogReplica`) is the only
  writer, on the event loop, through :meth:`ItemTitles.apply` (a batch of upserts and deletions) -- it
  knows what the ``items`` topic says. The worker only creates the object (from the index snapshot).
* **readers**: any thread (the hot path runs in the pool) through ``get`` / ``[]`` / ``in``.
* **thread safety**: every write sets or removes ONE key of a plain dict, which CPython does atomically
  under the GIL, and nothing iterates the live dict except :meth:`copy`, which copies it in one C call
  (also atomic under the GIL). A reader therefore sees each title before or after an update, never a
  torn state; it may see one item of a batch updated and another not yet (titles are independent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ["ItemTitles"]


class ItemTitles(Mapping[str, str]):
    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._titles: dict[str, str] = dict(initial or {})

    def __getitem__(self, item_id: str) -> str:
        return self._titles[item_id]

    def get(self, item_id: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._titles.get(item_id, default)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._titles

    def __len__(self) -> int:
        return len(self._titles)

    def __iter__(self) -> Iterator[str]:
        return iter(self.copy())  # a snapshot: iterating the live dict could race with the writer

    def copy(self) -> dict[str, str]:
        """A consistent copy (for snapshots)."""
        return self._titles.copy()

    def apply(self, upserts: Iterable[tuple[str, str]] = (), deletes: Iterable[str] = ()) -> None:
        """The writer's only call: set titles, then drop deleted items (one key at a time, see above)."""
        for item_id, title in upserts:
            self._titles[item_id] = title
        for item_id in deletes:
            self._titles.pop(item_id, None)
