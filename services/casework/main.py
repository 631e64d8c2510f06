"""The casework service: the staged intervention process, with evidence, clocks and escalations."""

from __future__ import annotations

from fastapi import FastAPI

from services.casework.api import router
from services.casework.consumers import alerts_consumer, clock_scanner
from services.casework.models import SCHEMA, RecordRead
from services.casework.settings import CaseworkSettings
from shared.app import Runtime, create_app
from shared.events import ESCALATIONS_TOPIC
from shared.outbox import OutboxRelay

DESCRIPTION = """
The staged intervention process of `domain.md` §5 (Halton framework, WTISA): Stage 1 early
intervention, Stage 2 cause for concern, Stage 3 referral to the Education Welfare Service, legal
action, closure. The workflow is a table (`GET /v1/casework/workflow`, drawn at
`/v1/casework/workflow.mmd`); the code runs that same table. Cases open from alerts
(`attendance.alerts.v1`) as the policy says; officers move them with dated, attributed evidence,
and every guard names the evidence it misses. The machine proposes legal action, never decides it.

Escalations are published on `casework.escalations.v1` (key UPN), thin, with the case URL.
Act on a case with `If-Match: <version>`: a stale version gets 409 and nothing is lost.
"""


def workers(runtime: Runtime):
    relay = OutboxRelay.for_service(runtime.settings, SCHEMA, [ESCALATIONS_TOPIC])
    return [alerts_consumer(runtime).run, clock_scanner(runtime), relay.run]


def build_app(settings: CaseworkSettings | None = None) -> FastAPI:
    return create_app(
        settings=settings or CaseworkSettings(),
        title="Attendance casework",
        description=DESCRIPTION,
        routers=[router],
        workers=workers,
        record_reads=RecordRead,
        openapi_tags=[
            {"name": "workflow", "description": "The transition table, as JSON and as a diagram"},
            {"name": "cases", "description": "Open, act on, search and read cases"},
            {"name": "worklist", "description": "What is due, for officers"},
        ],
    )
