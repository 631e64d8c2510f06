"""What casework listens to: alerts (cases open and gather notes) and the registry's schools."""

from __future__ import annotations

import functools

from services.casework import service
from services.casework.models import SCHEMA
from services.casework.settings import CaseworkSettings
from shared.app import Runtime, Worker, periodic
from shared.consumer import ConsumerRunner
from shared.events import ALERTS_TOPIC, REGISTERS_TOPIC
from shared.time import school_today


def alerts_consumer(runtime: Runtime) -> ConsumerRunner:
    settings: CaseworkSettings = runtime.settings  # type: ignore[assignment]
    handler = functools.partial(service.handle_events, settings=settings)
    return ConsumerRunner.for_service(
        runtime, settings.consumer_group, SCHEMA, [ALERTS_TOPIC, REGISTERS_TOPIC], handler
    )


def clock_scanner(runtime: Runtime) -> Worker:
    """Marks clocks due and overdue as their dates come; any replica may run it, one scans at a time."""
    settings: CaseworkSettings = runtime.settings  # type: ignore[assignment]

    async def scan() -> None:
        async with runtime.sessionmaker() as session, session.begin():
            await service.scan_clocks(session, settings, school_today())

    return periodic("casework_clock_scan", settings.clock_scan_seconds, scan)
