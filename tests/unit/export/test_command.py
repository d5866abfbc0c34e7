"""``streamrec export`` settings and argument parsing (the export itself is exercised by the fixture)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamrec.commands import export as export_cmd
from streamrec.config import settings_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    export_cmd.register(sub)
    return parser.parse_args(["export", *argv])


def test_default_output_is_under_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    s = settings_from_args(export_cmd.ExportSettings, parse([]))
    assert s.output == tmp_path / "streamrec" / "models" / "all-MiniLM-L6-v2"
    assert s.resolved_source().name == "model"
    assert (s.resolved_source() / "config.json").is_file()


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMREC_EXPORT_OUTPUT", str(tmp_path / "env"))
    monkeypatch.setenv("STREAMREC_EXPORT_THREADS", "1")
    s = settings_from_args(export_cmd.ExportSettings, parse(["--output", str(tmp_path / "flag"), "--overwrite"]))
    assert s.output == tmp_path / "flag" and s.threads == 1 and s.overwrite


def test_help_lists_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    assert "STREAMREC_EXPORT_OUTPUT" in out and "STREAMREC_EXPORT_SOURCE" in out


def test_missing_source_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_cmd.main(["--source", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "is not a Hugging Face model folder (no config.json)" in capsys.readouterr().err


def test_an_existing_verified_export_is_kept(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_cmd.main(["--output", str(model_dir)]) == 0
    assert "already holds a verified export" in capsys.readouterr().out


def test_export_detail_goes_to_the_log_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """What onnxruntime's quantizer (root logger), warnings and native code write to stderr lands in the log
    file; the progress lines on stdout stay on the console."""
    import logging
    import os
    import warnings

    root = logging.getLogger()
    handler = logging.StreamHandler()  # like the CLI's basicConfig: a handler on sys.stderr
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    log = tmp_path / "x.export.log"
    try:
        with export_cmd.detail_to_file(log):
            print("building variant cpu-int8", flush=True)
            logging.info("Quantization parameters for tensor:%s", "/layer.0/output")
            warnings.warn("a TracerWarning-like warning", UserWarning, stacklevel=1)
            os.write(2, b"[W:onnxruntime:native] from C++\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capfd.readouterr()
    assert out == "building variant cpu-int8\n" and err == ""
    detail = log.read_text()
    assert "Quantization parameters for tensor:/layer.0/output" in detail
    assert "TracerWarning-like" in detail and "from C++" in detail
    with export_cmd.detail_to_file(log, verbose=True):
        os.write(2, b"shown with --verbose\n")
    assert "shown with --verbose" in capfd.readouterr().err


def test_a_stale_export_needs_overwrite(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    data = json.loads((old / "manifest.json").read_text())
    data["variants"]["cpu-int8"]["recipe"]["reduce_range"] = False
    (old / "manifest.json").write_text(json.dumps(data))
    assert export_cmd.main(["--output", str(old)]) == 2
    assert "not a verified export made by this version" in capsys.readouterr().err
