"""Dead letters: what a consumer writes to `<topic>.dlq` when it cannot apply a message, and how an
operator looks at them and sends them back (`attendance dlq list|replay`).

A dead letter is the original record (same key, same value) with headers saying why it failed and
where it came from. Replaying publishes it again to its source topic, with its key, so it lands in
the same partition as the rest of its pupil's events (after them). Every consumer group of the
topic reads it again: the ones that applied it before skip it (their `applied_events` hold its id),
so only the consumer that failed on it applies it now.

What was replayed is recorded as the committed offsets of the consumer group `REPLAY_GROUP` on the
dead-letter topic: each dead letter is replayed once, however often the command runs (twice only
if the command dies between publishing and committing, which the consumers' de-duplication absorbs).
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.events import dead_letter_topic
from shared.kafka import make_producer

REPLAY_GROUP = "attendance-dlq-replay"


def dead_letter_headers(record: ConsumerRecord, exc: BaseException, consumer: str) -> list[tuple[str, bytes]]:
    """The headers a consumer puts on the dead letter of `record`."""
    return [
        ("dlq.error", repr(exc)[:1000].encode()),
        ("dlq.trace", "".join(traceback.format_exception_only(exc))[:2000].encode()),
        ("dlq.source.topic", record.topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
        ("dlq.consumer", consumer.encode()),
    ]


class NoDeadLetterTopic(LookupError):
    """The broker has no `<topic>.dlq`: no consumer of the topic has started against it."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # on the dead-letter topic
    offset: int
    headers: dict[str, str]
    event_id: str | None  # None when the value is not a CloudEvent (what made it fail, perhaps)
    event_type: str | None
    replayed: bool

    @property
    def consumer(self) -> str:
        """The consumer group that failed on it."""
        return self.headers.get("dlq.consumer", "?")

    @property
    def error(self) -> str:
        return self.headers.get("dlq.error", "")

    @property
    def source(self) -> str:
        """Where the message was when it failed: topic partition:offset."""
        h = self.headers
        return (
            f"{h.get('dlq.source.topic', '?')} {h.get('dlq.source.partition', '?')}:{h.get('dlq.source.offset', '?')}"
        )


def _event_identity(value: bytes | None) -> tuple[str | None, str | None]:
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(event, dict):
        return None, None
    return event.get("id"), event.get("type")


async def _assign_all(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await consumer.topics()  # loads the metadata
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        raise NoDeadLetterTopic(topic)
    consumer.assign(partitions)
    return partitions


async def _batches_to_end(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord]]]:
    """The records from each partition's current position to the end it had when reading began."""
    end = await consumer.end_offsets(list(partitions))
    while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
        for tp, records in (await consumer.getmany(*partitions, timeout_ms=500)).items():
            yield tp, records


def _replay_consumer(bootstrap: str) -> AIOKafkaConsumer:
    # Assigned, never subscribed: the group only keeps the replay's committed offsets.
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=REPLAY_GROUP, enable_auto_commit=False, auto_offset_reset="earliest"
    )


async def list_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every dead letter of `topic`, oldest first per partition, with whether it was replayed."""
    consumer = _replay_consumer(bootstrap)
    await consumer.start()
    try:
        partitions = await _assign_all(consumer, dead_letter_topic(topic))
        replayed_before = {tp: await consumer.committed(tp) or 0 for tp in partitions}
        await consumer.seek_to_beginning(*partitions)
        letters = []
        async for tp, records in _batches_to_end(consumer, partitions):
            for record in records:
                event_id, event_type = _event_identity(record.value)
                letters.append(
                    DeadLetter(
                        partition=tp.partition,
                        offset=record.offset,
                        headers={name: value.decode(errors="replace") for name, value in record.headers},
                        event_id=event_id,
                        event_type=event_type,
                        replayed=record.offset < replayed_before[tp],
                    )
                )
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        await consumer.stop()


async def replay_dead_letters(bootstrap: str, topic: str) -> int:
    """Publish every dead letter of `topic` not replayed before back to `topic`; how many."""
    consumer = _replay_consumer(bootstrap)
    producer = make_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        partitions = await _assign_all(consumer, dead_letter_topic(topic))
        replayed = 0
        async for tp, records in _batches_to_end(consumer, partitions):
            # Sent in order; committed once the broker has them all.
            sent = [await producer.send(topic, value=record.value, key=record.key) for record in records]
            await asyncio.gather(*sent)
            await consumer.commit({tp: records[-1].offset + 1})
            replayed += len(records)
        return replayed
    finally:
        await producer.stop()
        await consumer.stop()
