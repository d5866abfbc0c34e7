"""Atomic, checksummed snapshot directories (no pickle: JSON, ``.npy`` with ``allow_pickle=False``, hnswlib's
own binary graph).

Layout under the caller's ``root``::

    root/CURRENT                 the name of the live snapshot (replaced atomically)
    root/snap-<time>-<rand>/     meta.json + the index's files
    root/.tmp-<rand>/            a save in progress (removed on failure, ignored by load)

A save writes every file into ``.tmp-*``, fsyncs the files, writes ``meta.json`` (format, version, kind, the
index's parameters, the caller's ``extra`` dict, a SHA-256 + size per file, and ``meta_sha256``: the SHA-256
of the metadata itself in canonical JSON, so that every byte of a snapshot is covered -- a flipped digit in
the caller's ``extra``, e.g. a resume offset, is refused like a flipped bit in the graph), fsyncs it and the directory,
renames it to ``snap-*``, then replaces ``CURRENT`` by write-temp + fsync + rename and removes older
snapshots. A crash at any point leaves either the previous snapshot or the new one, never a torn one. Load
follows ``CURRENT``, checks format, kind, sizes and checksums before handing any byte to hnswlib (which
does not validate its input), and raises :class:`SnapshotError` on any mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from streamrec.index._base import SnapshotError

log = logging.getLogger(__name__)

FORMAT = "streamrec-index-snapshot"
VERSION = 2  # 2: meta.json carries meta_sha256 (version 1 snapshots are refused: rebuilt once)
META = "meta.json"
CURRENT = "CURRENT"


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json(path: Path, obj: Any) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def check_jsonable(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    try:
        json.loads(json.dumps(extra, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"extra must be JSON-serialisable (str keys, finite numbers): {e}") from e
    return extra


class SnapshotWriter:
    """Collects one snapshot's files in a temporary directory; :meth:`commit` publishes it atomically.

    Use as a context manager: leaving the block with an exception removes the temporary directory.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        self.tmp.mkdir()
        self._done = False

    def path(self, name: str) -> Path:
        if "/" in name or name in (META, "", ".", ".."):
            raise ValueError(f"bad snapshot file name {name!r}")
        return self.tmp / name

    def commit(self, kind: str, meta: dict[str, Any]) -> Path:
        files: dict[str, dict[str, Any]] = {}
        for p in sorted(self.tmp.iterdir()):
            _fsync_path(p)
            files[p.name] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
        doc = {"format": FORMAT, "version": VERSION, "kind": kind, "created_unix": time.time(), **meta, "files": files}
        doc = json.loads(json.dumps(doc, allow_nan=False))  # the digest is of what load will read back
        doc["meta_sha256"] = meta_digest(doc)
        write_json(self.tmp / META, doc)
        _fsync_path(self.tmp, directory=True)
        final = self.root / f"snap-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        os.rename(self.tmp, final)
        self._done = True
        current_tmp = self.root / f".{CURRENT}.{uuid.uuid4().hex}"
        current_tmp.write_text(final.name + "\n", encoding="utf-8")
        _fsync_path(current_tmp)
        os.replace(current_tmp, self.root / CURRENT)
        _fsync_path(self.root, directory=True)
        self._remove_old(keep=final.name)
        return final

    def _remove_old(self, keep: str) -> None:
        for p in self.root.iterdir():
            if p.name != keep and p.is_dir() and p.name.startswith(("snap-", ".tmp-")) and p != self.tmp:
                shutil.rmtree(p, ignore_errors=True)

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata (without its own ``meta_sha256``) in canonical JSON: sorted keys, no spaces."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def open_snapshot(root: Path | str, kind: str, required: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    """Find the live snapshot under ``root``, verify it, and return its directory and metadata.

    Raises :class:`SnapshotError` when there is none, or it is of another kind, format or version, or a file
    is missing, has the wrong size or the wrong checksum.
    """
    root = Path(root)
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError as e:
        raise SnapshotError(f"no index snapshot in {root} (no {CURRENT} file): rebuild the index") from e
    except (OSError, UnicodeDecodeError) as e:
        raise SnapshotError(f"cannot read {root / CURRENT}: {e}: rebuild the index") from e
    snap = root / name
    if not name.startswith("snap-") or "/" in name or not snap.is_dir():
        raise SnapshotError(f"{root / CURRENT} points to {name!r}, which is not a snapshot: rebuild the index")
    try:
        meta = json.loads((snap / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SnapshotError(f"unreadable snapshot metadata {snap / META}: {e}: rebuild the index") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SnapshotError(f"{snap} is not a streamrec index snapshot")
    if meta.get("version") != VERSION:
        raise SnapshotError(f"{snap} has snapshot version {meta.get('version')!r}; this code reads {VERSION}")
    try:
        digest = meta_digest(meta)
    except ValueError as e:  # NaN/Infinity: never written by us
        raise SnapshotError(f"{snap / META} holds non-finite numbers: corrupt, rebuild the index") from e
    if meta.get("meta_sha256") != digest:
        raise SnapshotError(f"checksum mismatch for {snap / META}: the snapshot metadata is corrupt, rebuild the index")
    if meta.get("kind") != kind:
        raise SnapshotError(f"{snap} holds a {meta.get('kind')!r} index, not {kind!r}")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise SnapshotError(f"{snap / META} lists no files")
    for req in required:
        if req not in files:
            raise SnapshotError(f"{snap} lacks {req}: rebuild the index")
    for fname, info in files.items():
        p = snap / fname
        if "/" in fname or not p.is_file():
            raise SnapshotError(f"{snap} lacks {fname}: rebuild the index")
        size = p.stat().st_size
        if not isinstance(info, dict) or size != info.get("bytes"):
            raise SnapshotError(f"{p} has {size} bytes, metadata says {info}: truncated or replaced")
        if _sha256(p) != info.get("sha256"):
            raise SnapshotError(f"checksum mismatch for {p}: the snapshot is corrupt, rebuild the index")
    return snap, meta


def check_expected(meta: dict[str, Any], **expected: Any) -> None:
    """Refuse a snapshot whose parameters differ from what the caller asked for (``None`` = anything)."""
    for key, want in expected.items():
        if want is not None and meta.get(key) != want:
            raise SnapshotError(f"snapshot has {key}={meta.get(key)!r} but {want!r} was expected: rebuild the index")


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
