"""Kafka clients configured from settings, and topic creation.

Production runs Apache Kafka; development and tests run Tansu, which does not support idempotent
or transactional producers. Correctness therefore rests on the outbox and on idempotent consumers,
never on broker transactions (ADR 0002).

Tansu also forgets everything when it restarts, and aiokafka clients reconnect to it as if nothing
happened: consumers carry on from offsets of the lost log and producers' retried sends are
acknowledged into topics that no longer exist. Clients therefore watch their connections
(`watch_connections`) and start over after one breaks.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import CloseReason
from aiokafka.errors import TopicAlreadyExistsError


class BrokerConnectionLost(Exception):
    """A client's connection to the broker broke: what it knows of the broker may be stale."""


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


def watch_connections(client: AIOKafkaConsumer | AIOKafkaProducer) -> asyncio.Event:
    """An event set when one of the client's broker connections breaks (call before start()).

    Nothing public tells when aiokafka reconnects. The close callback of its internal client
    (aiokafka 0.14, see constraints.txt) runs as the old connection dies, long before a restarted
    broker can answer on a new one, so a check of the event after a request completes tells
    whether its answer may come from a restarted broker."""
    lost = asyncio.Event()
    kafka_client = client.client if isinstance(client, AIOKafkaProducer) else client._client
    on_closed = kafka_client._on_connection_closed

    def note(conn: object, reason: object) -> None:
        if reason in (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT):
            lost.set()
        on_closed(conn, reason)

    kafka_client._on_connection_closed = note
    return lost
