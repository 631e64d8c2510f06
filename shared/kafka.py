"""Kafka clients configured from settings, and topic creation.

Production runs Apache Kafka; development and tests run Tansu, which does not support idempotent
or transactional producers. Correctness therefore rests on the outbox and on idempotent consumers,
never on broker transactions (ADR 0002).
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def make_producer(bootstrap: str, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "request_timeout_ms": 10000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int, replication_factor: int = 1) -> None:
    """Create missing topics (idempotent). Production may pre-create them with more partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(name=t, num_partitions=partitions, replication_factor=replication_factor)
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
