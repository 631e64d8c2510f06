"""The consumer runner: batches from Kafka, exactly-once effect, dead letters, graceful stop.

For each batch the runner opens one database transaction, records the ids of the events it
applies in `<schema>.applied_events` and calls the handler with the events not seen before; the
Kafka offsets are committed only after that transaction commits. A redelivered event is therefore
skipped, and a crash between the two commits replays events whose effect is already stored,
which the id table turns into no-ops. A handler that is idempotent by construction (its effects are
keyed by the versions the events carry) can do without the table: `record_applied=False`.

While a batch is being applied the next one is fetched and parsed, so the service's CPU work
overlaps the database's; it is committed only after it too has been applied.

A batch whose handler fails is retried event by event; an event that still fails (or cannot be
parsed) goes to `<topic>.dlq` with the error and never blocks its partition. Infrastructure
errors (database or broker away) are not the event's fault: the runner rewinds and retries.

A broken connection to the broker also restarts the consumer, from the committed offsets: the
broker may have restarted, and a restarted dev broker (Tansu) has forgotten its logs and offsets,
so the old consumer's positions would skip the start of the re-created log.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import is_transient
from shared.dead_letters import dead_letter_headers
from shared.events import CloudEvent, dead_letter_topic, parse_event
from shared.kafka import BrokerConnectionLost, ensure_topics, make_producer, watch_connections
from shared.observability import CONSUMED, CONSUMER_LAG

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncSession, list[CloudEvent[Any]]], Awaitable[None]]

_PARSE_SLICE = 100  # records parsed between two turns of the event loop


@dataclass
class _Batch:
    records: dict[TopicPartition, list[ConsumerRecord]]
    parsed: list[tuple[ConsumerRecord, CloudEvent[Any] | Exception]]  # in the order of `records`


class ConsumerRunner:
    def __init__(
        self,
        *,
        name: str,
        schema: str,
        topics: Sequence[str],
        handler: Handler,
        sessionmaker: async_sessionmaker[AsyncSession],
        bootstrap: str,
        partitions: int,
        replication_factor: int = 1,
        batch_size: int = 2000,
        batch_timeout_ms: int = 50,
        record_applied: bool = True,
    ) -> None:
        self.name = name
        self.schema = schema
        self.topics = list(topics)
        self.handler = handler
        self.sessionmaker = sessionmaker
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.batch_size = batch_size
        self.batch_timeout_ms = batch_timeout_ms
        self.record_applied = record_applied

    @classmethod
    def for_service(
        cls,
        runtime: Any,
        name: str,
        schema: str,
        topics: Sequence[str],
        handler: Handler,
        *,
        record_applied: bool = True,
    ) -> ConsumerRunner:
        """A service's consumer in group `name`, configured from its settings and sessions."""
        settings = runtime.settings
        return cls(
            name=name,
            schema=schema,
            topics=topics,
            handler=handler,
            sessionmaker=runtime.sessionmaker,
            bootstrap=settings.kafka_bootstrap_servers,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            batch_size=settings.consumer_batch_size,
            batch_timeout_ms=settings.consumer_batch_timeout_ms,
            record_applied=record_applied,
        )

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._consume(stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_error", consumer=self.name, error=repr(exc), retry_in=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _consume(self, stop: asyncio.Event) -> None:
        dlq_topics = [dead_letter_topic(t) for t in self.topics]
        await ensure_topics(self.bootstrap, self.topics + dlq_topics, self.partitions, self.replication_factor)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
        )
        consumer.subscribe(self.topics, listener=_LagOfAssignedPartitions(self.name))
        broker_lost = watch_connections(consumer)
        producer = make_producer(self.bootstrap)
        await consumer.start()
        await producer.start()
        ahead: asyncio.Future[_Batch] | None = None
        try:
            while not stop.is_set():
                batch = await (ahead or self._read(consumer))
                ahead = None
                if broker_lost.is_set():
                    raise BrokerConnectionLost("broker connection broke; restarting from committed offsets")
                if not batch.records:
                    continue
                # The next batch is fetched and parsed while this one's statements run in the
                # database. It is not committed until applied: a restart reads it again.
                ahead = asyncio.ensure_future(self._read(consumer))
                # A transient failure escapes to run(), which restarts the consumer from the
                # last committed offsets: the batch is read again, nothing is skipped.
                await self._process(batch, producer)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.records.items()}
                await self._commit(consumer, offsets, broker_lost)
                await self._report_lag(consumer, batch.records)
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.wait([ahead])
                if not ahead.cancelled():
                    ahead.exception()  # retrieved: the consumer is stopping or restarting anyway
            _forget_lag(self.name, consumer.assignment())
            with contextlib.suppress(Exception):
                await producer.stop()
            await _stop_consumer(consumer)

    async def _commit(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], broker_lost: asyncio.Event
    ) -> None:
        """Commit, but give up if the broker connection breaks first: aiokafka would retry the
        commit on the next connection, perhaps to a restarted broker where these offsets point
        past records of a re-created log. Not committing only means reading the batch again."""
        if broker_lost.is_set():
            raise BrokerConnectionLost("broker connection broke before the offset commit")
        commit = asyncio.ensure_future(consumer.commit(offsets))
        lost = asyncio.ensure_future(broker_lost.wait())
        try:
            await asyncio.wait({commit, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            commit.cancel()  # no-op once done; stops aiokafka's retries otherwise
        if broker_lost.is_set():
            if commit.done() and not commit.cancelled():
                commit.exception()  # retrieved: the broken connection explains it
            raise BrokerConnectionLost("broker connection broke during the offset commit")
        commit.result()

    async def _read(self, consumer: AIOKafkaConsumer) -> _Batch:
        """The next batch, each record parsed (or the error that makes it unreadable). Parsing
        gives way to the event loop every few records, so the batch being applied meanwhile is
        not held up when its database answers."""
        records = await consumer.getmany(timeout_ms=self.batch_timeout_ms, max_records=self.batch_size)
        parsed: list[tuple[ConsumerRecord, CloudEvent[Any] | Exception]] = []
        for partition_records in records.values():
            for record in partition_records:
                try:
                    parsed.append((record, parse_event(record.value)))
                except Exception as exc:
                    parsed.append((record, exc))
                if len(parsed) % _PARSE_SLICE == 0:
                    await asyncio.sleep(0)
        return _Batch(records, parsed)

    async def _process(self, batch: _Batch, producer) -> None:
        events: list[tuple[ConsumerRecord, CloudEvent[Any]]] = []
        for record, outcome in batch.parsed:
            if isinstance(outcome, Exception):
                await self._dead_letter(producer, record, outcome)
            else:
                events.append((record, outcome))
        if not events:
            return
        try:
            await self._apply([e for _, e in events])
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch_failed_retrying_singly", consumer=self.name, error=repr(exc))
            for record, event in events:
                try:
                    await self._apply([event])
                except Exception as single_exc:
                    if is_transient(single_exc):
                        raise
                    await self._dead_letter(producer, record, single_exc, event.id)

    async def _apply(self, events: list[CloudEvent[Any]]) -> None:
        async with self.sessionmaker() as session, session.begin():
            if self.record_applied:
                result = await session.execute(
                    text(
                        f'INSERT INTO "{self.schema}".applied_events (consumer, event_id) '
                        "SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING "
                        "RETURNING event_id"
                    ),
                    {"consumer": self.name, "ids": [e.id for e in events]},
                )
                fresh_ids = {row[0] for row in result}
            else:
                fresh_ids = {e.id for e in events}
            fresh: list[CloudEvent[Any]] = []
            for event in events:
                if event.id in fresh_ids:
                    fresh.append(event)
                    fresh_ids.discard(event.id)  # a duplicate inside the batch counts once
            if fresh:
                # Logs inside the handler name the event when there is one (the per-event retry).
                event_id = str(fresh[0].id) if len(fresh) == 1 else None
                with structlog.contextvars.bound_contextvars(consumer=self.name, event_id=event_id, events=len(fresh)):
                    await self.handler(session, fresh)
            CONSUMED.labels(self.name, "batch", "applied").inc(len(fresh))
            CONSUMED.labels(self.name, "batch", "duplicate").inc(len(events) - len(fresh))

    async def _dead_letter(
        self, producer, record: ConsumerRecord, exc: BaseException, event_id: uuid.UUID | None = None
    ) -> None:
        await producer.send_and_wait(
            dead_letter_topic(record.topic),
            value=record.value,
            key=record.key,
            headers=dead_letter_headers(record, exc, self.name),
        )
        CONSUMED.labels(self.name, record.topic, "dead_lettered").inc()
        log.error(
            "event_dead_lettered",
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=str(event_id) if event_id else None,
            error=repr(exc)[:300],
        )

    async def _report_lag(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list]) -> None:
        for tp, records in batch.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(highwater - (records[-1].offset + 1), 0)
                CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(lag)


class _LagOfAssignedPartitions(ConsumerRebalanceListener):
    """Keeps a replica's lag gauge to the partitions it consumes. The gauge is set after each
    batch; a partition that moves to another replica must stop being reported here, or the lag
    summed over replicas (what the autoscaler scales on) would count it twice, stale."""

    def __init__(self, consumer_name: str) -> None:
        self.consumer_name = consumer_name

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        _forget_lag(self.consumer_name, revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass  # reported after the first batch from each


def _forget_lag(consumer_name: str, partitions: set[TopicPartition]) -> None:
    for tp in partitions:
        with contextlib.suppress(KeyError):  # never reported: no batch came from it
            CONSUMER_LAG.remove(consumer_name, tp.topic, str(tp.partition))


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer, whatever state the broker left it in.

    aiokafka 0.14's `stop()` can raise the CancelledError of a fetch it cancels, one backing off
    after a broker error (aio-libs/aiokafka#647). That is not the runner being cancelled: letting
    it out would end `run()` silently, leaving the service without its consumer."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # the runner itself is being cancelled
            raise
        with contextlib.suppress(Exception):
            await consumer._client.close()  # the rest of stop(): connections, metadata task
    except Exception:
        pass
