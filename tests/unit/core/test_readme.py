"""The README documents every worker setting (its configuration table is checked, not trusted)."""

from __future__ import annotations

from pathlib import Path

from streamrec.config import env_name
from streamrec.streams.settings import WorkerSettings

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_worker_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [
        env_name(WorkerSettings, name)
        for name in WorkerSettings.model_fields
        if f"| `{env_name(WorkerSettings, name)}` | `--{name.replace('_', '-')}` |" not in text
    ]
    assert not missing, f"README's configuration table lacks {missing}"
