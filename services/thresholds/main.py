"""The thresholds service: running attendance and alerts, seconds after a register closes."""

from __future__ import annotations

from fastapi import FastAPI

from services.thresholds.api import router
from services.thresholds.consumers import marks_consumer
from services.thresholds.models import SCHEMA, RecordRead
from services.thresholds.settings import ThresholdsSettings
from shared.app import Runtime, create_app
from shared.events import ALERTS_TOPIC
from shared.outbox import OutboxRelay

DESCRIPTION = """
Every pupil's running attendance and every threshold of the LA's policy (`domain.md` §3-4),
kept from `attendance.marks.v1`. Alerts are published on `attendance.alerts.v1` (key UPN) as
`attendance.alert.raised` / `attendance.alert.cleared`, each with its rule id, policy version,
figures, window and the sessions counted.

Policies are versioned per LA (`/v1/policies/{la_code}`), with school overrides; the national
default applies until an LA sets one. `persistent_lateness` has no national number: its default
(10 late sessions in 6 school weeks) is local practice, unconfirmed, and configurable.
"""


def workers(runtime: Runtime):
    relay = OutboxRelay.for_service(runtime.settings, SCHEMA, [ALERTS_TOPIC])
    return [marks_consumer(runtime).run, relay.run]


def build_app(settings: ThresholdsSettings | None = None) -> FastAPI:
    return create_app(
        settings=settings or ThresholdsSettings(),
        title="Attendance thresholds",
        description=DESCRIPTION,
        routers=[router],
        workers=workers,
        record_reads=RecordRead,
        openapi_tags=[
            {"name": "attendance", "description": "Pupils' figures for any period, and as known at any instant"},
            {"name": "alerts", "description": "Threshold crossings with their evidence"},
            {"name": "policies", "description": "Versioned LA policies: rule ids, numbers and windows"},
        ],
    )
