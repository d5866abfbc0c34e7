"""The ``streamrec`` command: one subcommand per process role."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from streamrec import __version__
from streamrec.commands import bench, covisit_owner, demo, evaluate, export, kafka, replay, tail, worker
from streamrec.errors import StreamrecError
from streamrec.streams.security import install_log_redaction

# One BLAS thread per process unless the user says otherwise (read when numpy loads, so before any command
# imports it): parallelism comes from the worker's pool threads, and idle OpenBLAS threads spin-wait --
# measured: a worker doing full-scan matrix products used 1.36 cores instead of 0.88 at 500 events/s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COMMANDS = [kafka, export, worker, covisit_owner, replay, tail, demo, bench, evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Streaming, real-time recommendations on Apache Kafka. "
        "Every setting is a flag and a STREAMREC_* environment variable (flag wins).",
    )
    parser.add_argument("--version", action="version", version=f"streamrec {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level [default: INFO]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # Kafka passwords never reach a log line, whoever logs
    try:
        return int(args.func(args))
    except StreamrecError as exc:
        print(f"streamrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
