"""The floor: a bare aiokafka echo -- consume from one topic, produce each record to another, nothing else.

    python -m benchmarks.e2e_echo --bootstrap 127.0.0.1:9092 --source IN --sink OUT --partitions 4

Same delivery settings as the worker's producer (acks=all, no linger), same partition and key, no
decoding. Runs in its own process (like a worker) until SIGTERM; prints ``ready`` once it reads.
Connection security from the same ``STREAMREC_KAFKA_*`` environment variables as every streamrec command.
"""

from __future__ import annotations

import argparse
import asyncio
import signal


async def echo(bootstrap: str, source: str, sink: str, partitions: int) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streamrec.streams.security import KafkaSecuritySettings

    security = KafkaSecuritySettings().kafka_security().aiokafka_kwargs()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, **security)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **security)
    await producer.start()
    try:
        await consumer.start()
        try:
            consumer.assign([TopicPartition(source, p) for p in range(partitions)])
            await consumer.seek_to_beginning()
            print("ready", flush=True)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        await producer.send(sink, r.value, key=r.key, partition=tp.partition)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--source", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--partitions", type=int, default=4)
    args = p.parse_args(argv)
    asyncio.run(echo(args.bootstrap, args.source, args.sink, args.partitions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
