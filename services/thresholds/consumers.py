"""What the thresholds service listens to: marks (and the registry's school details and purges)."""

from __future__ import annotations

import functools

from services.thresholds import service
from services.thresholds.models import SCHEMA
from services.thresholds.settings import ThresholdsSettings
from shared.app import Runtime
from shared.consumer import ConsumerRunner
from shared.events import MARKS_TOPIC, REGISTERS_TOPIC


def marks_consumer(runtime: Runtime, group: str | None = None) -> ConsumerRunner:
    settings: ThresholdsSettings = runtime.settings  # type: ignore[assignment]
    return ConsumerRunner(
        name=group or settings.consumer_group,
        schema=SCHEMA,
        topics=[MARKS_TOPIC, REGISTERS_TOPIC],
        handler=functools.partial(service.handle_events, settings=settings),
        sessionmaker=runtime.sessionmaker,
        bootstrap=settings.kafka_bootstrap_servers,
        partitions=settings.kafka_topic_partitions,
        batch_size=settings.consumer_batch_size,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
    )
