"""``streamrec demo``: the README's main job on a fresh machine.

Until the streaming pipeline lands this starts the local Apache Kafka and says so.
"""

from __future__ import annotations

import argparse

from streamrec.commands.kafka import KafkaSettings
from streamrec.config import add_settings_arguments, settings_from_args
from streamrec.localkafka import LocalKafka


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on a local Kafka")
    add_settings_arguments(p, KafkaSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(KafkaSettings, args)
    status = LocalKafka(settings.to_config()).up()
    print(status.describe())
    print("The streaming pipeline is not built yet: this demo only starts Kafka (stop it: streamrec kafka down).")
    return 0
