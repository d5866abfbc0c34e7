"""A local single-node Apache Kafka (KRaft) started from Maven Central's jars, for demos and tests."""

from streamrec.localkafka.broker import (
    KAFKA_VERSION,
    BrokerStatus,
    LocalKafka,
    LocalKafkaConfig,
    LocalKafkaError,
    kafka_answers,
)

__all__ = ["KAFKA_VERSION", "BrokerStatus", "LocalKafka", "LocalKafkaConfig", "LocalKafkaError", "kafka_answers"]
