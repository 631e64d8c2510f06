"""What CME listens to: the register stream (joiners, unmarked pupils, schools) and alerts (missing children)."""

from __future__ import annotations

import functools

from services.cme import service
from services.cme.models import SCHEMA
from services.cme.settings import CmeSettings
from shared.app import Runtime, Worker, periodic
from shared.consumer import ConsumerRunner
from shared.events import ALERTS_TOPIC, MARKS_TOPIC, REGISTERS_TOPIC
from shared.time import school_today


def stream_consumer(runtime: Runtime) -> ConsumerRunner:
    settings: CmeSettings = runtime.settings  # type: ignore[assignment]
    handler = functools.partial(service.handle_events, settings=settings)
    return ConsumerRunner.for_service(
        runtime, settings.consumer_group, SCHEMA, [MARKS_TOPIC, REGISTERS_TOPIC, ALERTS_TOPIC], handler
    )


def clock_scanner(runtime: Runtime) -> Worker:
    """Marks returns due and overdue as their dates come, and flags unmarked pupils; any replica
    may run it, one scans at a time."""
    settings: CmeSettings = runtime.settings  # type: ignore[assignment]

    async def scan() -> None:
        async with runtime.sessionmaker() as session, session.begin():
            await service.scan(session, settings, school_today())

    return periodic("cme_clock_scan", settings.clock_scan_seconds, scan)
