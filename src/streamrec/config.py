"""Settings plumbing shared by the entry points.

Each process has one frozen settings class (a ``pydantic_settings.BaseSettings`` with
``env_prefix="STREAMREC_"``). Every field is also a command-line flag; ``--help`` shows the
environment variable and the value in force. Only entry points build settings: libraries take
plain arguments and never read ``os.environ``.

Precedence: command-line flag > ``STREAMREC_*`` environment variable > field default.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from streamrec.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(a is bool for a in typing.get_args(annotation))
    return False


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(a is SecretStr for a in typing.get_args(annotation))
    return False


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    """Add one ``--flag`` per settings field; ``--help`` names its env var and its value in force."""
    group = parser.add_argument_group(f"settings ({cls.__name__})")
    for name, field in cls.model_fields.items():
        env = env_name(cls, name)
        shown = os.environ.get(env)
        source = "env" if shown is not None else "default"
        if shown is None:
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else str(default)
        elif _is_secret(field.annotation):
            shown = "(set, not shown)"  # a password's value never appears in --help
        help_text = f"{field.description or ''} [env {env}; {source}: {shown!s}]".strip()
        flag = "--" + name.replace("_", "-")
        if _is_bool(field.annotation):
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif typing.get_origin(field.annotation) is typing.Literal:
            choices = [str(c) for c in typing.get_args(field.annotation)]
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices, help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def settings_from_args(cls: type[S], namespace: argparse.Namespace) -> S:
    """Build the settings object: flags given on the command line override the environment."""
    given = {k: v for k, v in vars(namespace).items() if k in cls.model_fields}
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in err['loc'])} ({env_name(cls, str(err['loc'][0]))}): " if err["loc"] else "")
            + err["msg"]  # the message only: never the input, which may be a password
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
