"""The registers service: owner of the attendance register."""

from __future__ import annotations

from fastapi import FastAPI

from services.registers.api import router
from services.registers.models import SCHEMA, RecordRead
from services.registers.settings import RegistersSettings
from shared.app import Runtime, create_app
from shared.events import MARKS_TOPIC, REGISTERS_TOPIC
from shared.outbox import OutboxRelay

DESCRIPTION = """
Owner of the attendance register. School MIS systems post each session's register here; every
new or changed mark is published on `attendance.marks.v1` (key UPN) and every register on
`attendance.registers.v1` (key URN) through a transactional outbox.

Authenticate with a bearer token (`POST /v1/auth/token` or `attendance token`). Errors are
RFC 9457 `application/problem+json`.
"""


def workers(runtime: Runtime):
    relay = OutboxRelay.for_service(runtime.settings, SCHEMA, [MARKS_TOPIC, REGISTERS_TOPIC])
    return [relay.run]


def build_app(settings: RegistersSettings | None = None) -> FastAPI:
    return create_app(
        settings=settings or RegistersSettings(),
        title="Attendance registers",
        description=DESCRIPTION,
        routers=[router],
        workers=workers,
        record_reads=RecordRead,
        openapi_tags=[
            {"name": "registers", "description": "Session registers, marks, amendments, change feed"},
            {"name": "codes", "description": "The DfE attendance code table"},
            {"name": "schools", "description": "The registry of schools and their calendars"},
            {"name": "auth", "description": "Bearer tokens for API clients"},
        ],
    )
