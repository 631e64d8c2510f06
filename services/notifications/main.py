"""The notifications service: signed webhooks for LA systems and email for officers, with a ledger."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications.api import router
from services.notifications.consumers import digest_scheduler, dispatcher, events_consumer, letter_renderer
from services.notifications.models import RecordRead
from services.notifications.settings import NotificationsSettings
from shared.app import Runtime, create_app

DESCRIPTION = """
Tells the people and systems who must act. LA systems subscribe endpoints to escalation, alert,
roll and CME events of their LA (`POST /v1/subscriptions`, role `la_system`); officers subscribe
an email address. Deliveries follow Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`), in order per pupil, retried with exponential backoff and jitter, and
dead-lettered after the retry budget; a slow or failing subscriber never delays the others.
Every attempt is in the ledger (`GET /v1/deliveries`); dead ones can be redelivered and any
period replayed. `GET /v1/asyncapi.json` documents every topic and webhook payload.

Stage letters to parents (seed 004: stages 1, 2 and 3, the formal warning) are rendered from
versioned templates per LA with the pupil's figures, as HTML and PDF (`/v1/letters`); confirming
one was posted records it on the case as evidence.

Verify a delivery with `shared/webhooks.py` (`verify(body, headers, secret)`) or the
`standardwebhooks` package.
"""


def workers(runtime: Runtime):
    return [
        events_consumer(runtime).run,
        dispatcher(runtime).run,
        letter_renderer(runtime).run,
        digest_scheduler(runtime).run,
    ]


def build_app(settings: NotificationsSettings | None = None) -> FastAPI:
    return create_app(
        settings=settings or NotificationsSettings(),
        title="Attendance notifications",
        description=DESCRIPTION,
        routers=[router],
        workers=workers,
        record_reads=RecordRead,
        openapi_tags=[
            {"name": "subscriptions", "description": "Webhook endpoints and officers' email, by event type"},
            {"name": "deliveries", "description": "The ledger: every delivery and attempt; redelivery"},
            {"name": "letters", "description": "Stage letters to parents: templates per LA, HTML and PDF, evidence"},
            {"name": "docs", "description": "The AsyncAPI document"},
        ],
    )
