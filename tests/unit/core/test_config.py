from __future__ import annotations

import argparse

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.errors import ConfigError, StreamrecError


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_DEMO_", frozen=True)
    port: int = Field(9092, description="the port")
    name: str = Field("x", description="a name")
    verbose: bool = Field(False, description="talk more")


def _parse(argv: list[str]) -> DemoSettings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, DemoSettings)
    return settings_from_args(DemoSettings, parser.parse_args(argv))


def test_flag_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parse([]).port == 9092
    monkeypatch.setenv("STREAMREC_DEMO_PORT", "9100")
    assert _parse([]).port == 9100
    assert _parse(["--port", "9200"]).port == 9200
    assert _parse(["--verbose"]).verbose is True
    monkeypatch.setenv("STREAMREC_DEMO_VERBOSE", "true")
    assert _parse(["--no-verbose"]).verbose is False


def test_help_names_env_var_and_value_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_DEMO_NAME", "from-env")
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, DemoSettings)
    text = " ".join(parser.format_help().split())
    assert "[env STREAMREC_DEMO_PORT; default: 9092]" in text
    assert "[env STREAMREC_DEMO_NAME; env: from-env]" in text


def test_bad_value_is_a_config_error_naming_the_env_var() -> None:
    with pytest.raises(ConfigError, match="STREAMREC_DEMO_PORT") as info:
        _parse(["--port", "not-a-number"])
    assert isinstance(info.value, StreamrecError)


def test_settings_are_frozen() -> None:
    settings = _parse([])
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        settings.port = 1  # type: ignore[misc]
