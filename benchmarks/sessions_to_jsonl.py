"""Turn a session-based click log into the two JSON Lines files ``streamrec evaluate`` reads.

The input is the tab-separated layout of the session-based recommendation literature (session-rec,
GRU4Rec's preprocessing): a header naming ``SessionId``, ``ItemId`` and ``Time`` (epoch seconds, fractions
allowed), one click per line; several files (a train and a test split) are merged and ordered by time. Each
session becomes a user, each click a ``click`` event (``event_id`` = ``<prefix><n>`` in time order, unique, so
``--kafka`` can join the recommendations back), and each item an ``items`` record titled ``item <id>``: such
logs carry no item text, so the text signal has nothing to read, as in a shop whose titles say nothing.

    python benchmarks/sessions_to_jsonl.py yoochoose-clicks-100k_train_full.txt yoochoose-clicks-100k_test.txt \
        --out /tmp/yc
    streamrec evaluate --events /tmp/yc/events.jsonl --items /tmp/yc/items.jsonl

The README's second-dataset figures ("Recommendation quality") were made this way from the YOOCHOOSE
(RecSys Challenge 2015) sample that the session-rec repository ships in ``data/rsc15/prepared/``; the data is
not part of this repository.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

_COLUMNS = ("SessionId", "ItemId", "Time")


def read_clicks(paths: Iterable[Path]) -> list[tuple[float, str, str]]:
    """``(time_s, session, item)`` of every line of every file, ordered by time (ties keep file order)."""
    clicks: list[tuple[float, str, str]] = []
    for path in paths:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter="\t")
            header = next(rows, None)
            if header is None:
                continue
            missing = [c for c in _COLUMNS if c not in header]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)} in the header {header}")
            s, i, t = (header.index(c) for c in _COLUMNS)
            for n, row in enumerate(rows, start=2):
                if not row:
                    continue
                try:
                    clicks.append((float(row[t]), row[s], row[i]))
                except (IndexError, ValueError):
                    raise ValueError(f"{path}:{n}: not a SessionId / ItemId / Time line: {row}") from None
    clicks.sort(key=lambda c: c[0])  # stable: ties in file order
    return clicks


def write_jsonl(clicks: Sequence[tuple[float, str, str]], out: Path, prefix: str = "c") -> tuple[Path, Path]:
    """``out/events.jsonl`` and ``out/items.jsonl`` in the topics' schemas; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    events, items = out / "events.jsonl", out / "items.jsonl"
    with events.open("w", encoding="utf-8") as f:
        for n, (t, session, item) in enumerate(clicks):
            doc = {
                "user_id": session,
                "type": "click",
                "item_id": item,
                "ts": round(t * 1000),
                "event_id": f"{prefix}{n}",
            }
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with items.open("w", encoding="utf-8") as f:
        for item in sorted({c[2] for c in clicks}):
            f.write(json.dumps({"item_id": item, "title": f"item {item}"}, ensure_ascii=False) + "\n")
    return events, items


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="tab-separated SessionId / ItemId / Time files")
    parser.add_argument("--out", type=Path, required=True, help="folder for events.jsonl and items.jsonl")
    parser.add_argument("--prefix", default="c", help="event_id prefix")
    args = parser.parse_args(argv)
    clicks = read_clicks(args.files)
    events, items = write_jsonl(clicks, args.out, args.prefix)
    sessions = len({c[1] for c in clicks})
    catalogue = len({c[2] for c in clicks})
    print(f"{len(clicks)} clicks of {sessions} sessions on {catalogue} items -> {events}, {items}")


if __name__ == "__main__":
    main()
