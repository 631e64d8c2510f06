"""The CME service: the admission register, notification clocks and children missing education."""

from __future__ import annotations

from fastapi import FastAPI

from services.cme.api import router
from services.cme.consumers import clock_scanner, stream_consumer
from services.cme.models import SCHEMA, RecordRead
from services.cme.settings import CmeSettings
from shared.app import Runtime, create_app
from shared.events import CME_TOPIC, ROLL_TOPIC
from shared.outbox import OutboxRelay

DESCRIPTION = """
The admission register (roll) and children missing education (`domain.md` §6).

Schools notify every addition (`POST /v1/schools/{urn}/admissions`) and deletion
(`POST /v1/schools/{urn}/deletions`, on a ground of Regs 2024 reg 9(1)). Each starts a clock
against the LA's deadline in the school's own school days (default: 1 school day); a return not
received by the end of its due day is missing, published as `cme.notification.overdue` and put on
the CME officer's worklist. A pupil marked in a register with no admission is an unnotified joiner,
clocked from the first mark; a pupil on roll missing from the school's last registers is flagged.

A child deleted without a known destination, or absent for 10 school days without reason, goes on
the LA's CME register (`GET /v1/cme/cases`) until located, with every reasonable enquiry logged.
A deletion at one school and an admission at another resolve each other, in either order.

Events: `roll.changes.v1` and `cme.events.v1` (key UPN), thin: no names, addresses, dates of birth
or characteristics, which stay in this service.
"""


def workers(runtime: Runtime):
    relay = OutboxRelay.for_service(runtime.settings, SCHEMA, [ROLL_TOPIC, CME_TOPIC])
    return [stream_consumer(runtime).run, clock_scanner(runtime), relay.run]


def build_app(settings: CmeSettings | None = None) -> FastAPI:
    return create_app(
        settings=settings or CmeSettings(),
        title="Attendance CME",
        description=DESCRIPTION,
        routers=[router],
        workers=workers,
        record_reads=RecordRead,
        openapi_tags=[
            {"name": "roll", "description": "Admissions and deletions: the admission register"},
            {"name": "notifications", "description": "Returns against their deadlines, per school and LA"},
            {"name": "cme", "description": "Children missing education: the CME register, enquiries, worklist"},
        ],
    )
