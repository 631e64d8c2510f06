"""What the thresholds service listens to: marks (and the registry's school details and purges),
live and, for a rebuild, replayed from the start."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.thresholds import service
from services.thresholds.models import SCHEMA
from services.thresholds.settings import ThresholdsSettings
from shared.app import Runtime
from shared.consumer import ConsumerRunner
from shared.db import is_transient, raw_connection
from shared.events import MARKS_TOPIC, REGISTERS_TOPIC, CloudEvent, parse_event


def marks_consumer(runtime: Runtime, group: str | None = None) -> ConsumerRunner:
    settings: ThresholdsSettings = runtime.settings  # type: ignore[assignment]
    handler = functools.partial(service.handle_events, settings=settings)
    # Marks are stored by version and the totals move only when a newer version arrives, so a
    # redelivered event changes nothing: no applied-event ids to keep (ADR 7).
    return ConsumerRunner.for_service(
        runtime, group or settings.consumer_group, SCHEMA, [MARKS_TOPIC, REGISTERS_TOPIC], handler, record_applied=False
    )


EVALUATION_CHUNK = 2000  # pupils per transaction when a rebuild re-evaluates everyone


@dataclass
class RebuildReport:
    events: int = 0  # replayed into the state
    unreadable: int = 0
    rejected: int = 0  # the handler raised
    pupils_evaluated: int = 0


async def rebuild(settings: ThresholdsSettings, sessionmaker: async_sessionmaker[AsyncSession]) -> RebuildReport:
    """Replay the marks and registers topics from the start into fresh running state.

    The series and totals are emptied and rebuilt from every event on the topics, as far as they
    reached when the rebuild began, skipping what the live consumer dead-lettered (events that are
    unreadable or that the handler rejects); a live consumer may go on meanwhile (each of its
    batches waits for the rebuild's current one, and applying a version twice changes nothing).
    Then every pupil is evaluated once: alerts that the rebuilt state does not support are cleared
    and missing ones raised, published as usual; alerts that agree are left as they are.
    """
    report = RebuildReport()
    async with sessionmaker() as session, session.begin():
        await service.lock_state(session, exclusive=True)
        conn = await raw_connection(session)
        await conn.execute(f"TRUNCATE {SCHEMA}.mark_versions, {SCHEMA}.enrolment_totals")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in (MARKS_TOPIC, REGISTERS_TOPIC)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.consumer_batch_size)
            events = []
            for records in batch.values():
                for record in records:
                    try:
                        events.append(parse_event(record.value))
                    except ValueError:
                        report.unreadable += 1  # dead-lettered when it first arrived
            if events:
                await _replay(settings, sessionmaker, events, report)
    finally:
        await consumer.stop()
    async with sessionmaker() as session:
        pupils = sorted(await service.known_pupils(session))
    for start in range(0, len(pupils), EVALUATION_CHUNK):
        async with sessionmaker() as session, session.begin():
            await service.lock_state(session, exclusive=True)
            await service.evaluate_pupils(session, settings, set(pupils[start : start + EVALUATION_CHUNK]))
    report.pupils_evaluated = len(pupils)
    return report


async def _replay(
    settings: ThresholdsSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    events: list[CloudEvent[Any]],
    report: RebuildReport,
) -> None:
    """Apply replayed events in one transaction or, if the handler rejects one, event by event,
    skipping the rejected ones as the live consumer did."""
    try:
        async with sessionmaker() as session, session.begin():
            await service.handle_events(session, events, settings, replay=True)
        report.events += len(events)
        return
    except Exception as exc:
        if is_transient(exc):
            raise
    for event in events:
        try:
            async with sessionmaker() as session, session.begin():
                await service.handle_events(session, [event], settings, replay=True)
        except Exception as exc:
            if is_transient(exc):
                raise
            report.rejected += 1
        else:
            report.events += 1
