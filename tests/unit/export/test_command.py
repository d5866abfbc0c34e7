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
