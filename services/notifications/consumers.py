"""What notifications listens to (alerts, escalations, roll and CME events) and the dispatcher."""

from __future__ import annotations

from services.notifications import service
from services.notifications.models import SCHEMA
from services.notifications.settings import NotificationsSettings
from shared.app import Runtime
from shared.asyncapi import DELIVERABLE_TOPICS
from shared.consumer import ConsumerRunner


def events_consumer(runtime: Runtime) -> ConsumerRunner:
    settings: NotificationsSettings = runtime.settings  # type: ignore[assignment]
    return ConsumerRunner.for_service(
        runtime, settings.consumer_group, SCHEMA, list(DELIVERABLE_TOPICS), service.handle_events
    )


def dispatcher(runtime: Runtime) -> service.Dispatcher:
    return service.Dispatcher(runtime.settings, runtime.sessionmaker)  # type: ignore[arg-type]


def letter_renderer(runtime: Runtime) -> service.LetterRenderer:
    return service.LetterRenderer(runtime.settings, runtime.sessionmaker)  # type: ignore[arg-type]


def digest_scheduler(runtime: Runtime) -> service.DigestScheduler:
    return service.DigestScheduler(runtime.settings, runtime.sessionmaker)  # type: ignore[arg-type]
