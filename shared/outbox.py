"""Transactional outbox: events are written in the same transaction as the state they describe,
and a relay publishes them to Kafka afterwards (ADR 0002).

- One outbox row holds a batch of messages for one topic (a whole register is one row), so
  writing 2,000 events costs one INSERT.
- The relay publishes rows in id order and deletes them only after the broker acknowledged every
  message, so a broker outage delays events but never loses them (at-least-once; consumers
  de-duplicate by event id). Acknowledgements that arrive after the producer's connection broke
  do not count: they may come from a restarted dev broker that dropped the messages.
- Per-key order holds because a producer writes a pupil's outbox row after locking that pupil's
  mark row: a later change of the same key always gets a later outbox id.
- Only one relay per service publishes at a time: it holds a PostgreSQL advisory lock (a lease
  that dies with its connection), so any number of replicas can run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.db import raw_connection
from shared.events import CloudEvent
from shared.kafka import BrokerConnectionLost, ensure_topics, make_producer, watch_connections
from shared.observability import OUTBOX_BACKLOG, OUTBOX_FAILURES, OUTBOX_PUBLISHED
from shared.settings import PlatformSettings

log = structlog.get_logger(__name__)

Message = tuple[str, bytes]  # (key, CloudEvent JSON)


@functools.lru_cache(maxsize=65_536)
def partition_of(key: str, partition_count: int) -> int:
    """The Java client's default partitioner (murmur2 of the key), so a pupil's events land in
    the same partition whoever produces them. Cached: aiokafka's murmur2 is pure Python and a
    pupil's key recurs every session."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partition_count


def encode(event: CloudEvent) -> bytes:
    return event.model_dump_json().encode()


async def enqueue(session, schema: str, topic: str, messages: Sequence[Message]) -> None:
    """Add messages to the outbox inside the caller's transaction."""
    if not messages:
        return
    conn = await raw_connection(session)
    await conn.execute(
        f'INSERT INTO "{schema}".outbox (topic, keys, payloads) VALUES ($1, $2, $3)',
        topic,
        [key for key, _ in messages],
        [payload for _, payload in messages],
    )
    # Wakes the relay when this transaction commits (NOTIFY is transactional).
    await conn.execute(f"NOTIFY {_channel(schema)}")


def _channel(schema: str) -> str:
    return f"{schema}_outbox"


def _lease_key(schema: str) -> int:
    return zlib.crc32(f"outbox:{schema}".encode())


class OutboxRelay:
    def __init__(
        self,
        *,
        schema: str,
        dsn: str,
        bootstrap: str,
        topics: Sequence[str],
        partitions: int,
        replication_factor: int = 1,
        batch_rows: int = 50,
        poll_interval: float = 1.0,
    ) -> None:
        self.schema = schema
        self.dsn = dsn.replace("postgresql+asyncpg://", "postgresql://")
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.batch_rows = batch_rows
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._broker_lost = asyncio.Event()

    @classmethod
    def for_service(cls, settings: PlatformSettings, schema: str, topics: Sequence[str]) -> OutboxRelay:
        """The relay of a service's outbox, configured from its settings."""
        return cls(
            schema=schema,
            dsn=settings.database_url,
            bootstrap=settings.kafka_bootstrap_servers,
            topics=topics,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            poll_interval=1.0,
        )

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._run_with_lease(stop)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: wait and try again
                OUTBOX_FAILURES.labels(self.schema).inc()
                log.warning("outbox_relay_error", schema=self.schema, error=repr(exc), retry_in=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _run_with_lease(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lease_key(self.schema)):
                # Another replica holds the lease; stand by.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    return
            await conn.add_listener(_channel(self.schema), lambda *_: self._wake.set())
            await ensure_topics(self.bootstrap, self.topics, self.partitions, self.replication_factor)
            producer = make_producer(self.bootstrap)
            self._broker_lost = watch_connections(producer)
            await producer.start()
            try:
                await self._publish_loop(conn, producer, stop)
            finally:
                await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _publish_loop(self, conn: asyncpg.Connection, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            published = await self._publish_once(conn, producer)
            if published:
                continue
            OUTBOX_BACKLOG.labels(self.schema).set(0)
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()

    async def _publish_once(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(
            f'SELECT id, topic, keys, payloads FROM "{self.schema}".outbox ORDER BY id LIMIT $1',
            self.batch_rows,
        )
        if not rows:
            return 0
        sent: list[asyncio.Future] = []
        count_by_topic: dict[str, int] = {}
        for row in rows:
            sent += await _send_row(producer, row["topic"], row["keys"], row["payloads"])
            count_by_topic[row["topic"]] = count_by_topic.get(row["topic"], 0) + len(row["keys"])
        await asyncio.gather(*sent)
        if self._broker_lost.is_set():
            # The producer reconnected while these were in flight, and Tansu, restarted empty,
            # acknowledges sends to topics it no longer has and drops them. Keep the rows: run()
            # starts over (re-creating the topics) and sends them again.
            raise BrokerConnectionLost("broker connection broke while publishing; not trusting the acks")
        await conn.execute(f'DELETE FROM "{self.schema}".outbox WHERE id = ANY($1::bigint[])', [r["id"] for r in rows])
        for topic, count in count_by_topic.items():
            OUTBOX_PUBLISHED.labels(self.schema, topic).inc(count)
        backlog = await conn.fetchval(f'SELECT coalesce(sum(cardinality(keys)), 0) FROM "{self.schema}".outbox')
        OUTBOX_BACKLOG.labels(self.schema).set(backlog)
        return sum(count_by_topic.values())


async def _send_row(
    producer: AIOKafkaProducer, topic: str, keys: Sequence[str], payloads: Sequence[bytes]
) -> list[asyncio.Future]:
    """Queue one outbox row as record batches, one stream per partition.

    Batches are cheaper than one `send` per message, and they keep order: the producer sends a
    partition's batches in the order they are queued, and rows are queued in outbox order. The
    partition follows `partition_of`.
    """
    partitions = sorted(await producer.partitions_for(topic))
    open_batches: dict[int, BatchBuilder] = {}
    queued: list[asyncio.Future] = []
    for key, payload in zip(keys, payloads, strict=True):
        key_bytes = key.encode()
        partition = partitions[partition_of(key, len(partitions))]
        batch = open_batches.get(partition)
        if batch is None:
            batch = open_batches[partition] = producer.create_batch()
        if batch.append(key=key_bytes, value=payload, timestamp=None) is None:  # batch full
            queued.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[partition] = producer.create_batch()
            batch.append(key=key_bytes, value=payload, timestamp=None)
    for partition, batch in open_batches.items():
        queued.append(await producer.send_batch(batch, topic, partition=partition))
    return queued
