"""Request and response bodies of the notifications API."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.asyncapi import DELIVERABLE_TOPICS
from shared.events import EVENT_TYPES
from shared.params import URN_PATTERN, Instant, RowId

DELIVERABLE_TYPES = sorted(m.event_type for m in EVENT_TYPES.values() if m.topic in DELIVERABLE_TOPICS)
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def matches(pattern: str, event_type: str) -> bool:
    """An event type filter: exact, or a prefix ending in `.*` (e.g. `cme.*`)."""
    return event_type == pattern or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))


def _url_problem(url: str) -> str | None:
    """Why deliveries could not be POSTed to `url`, read as the dispatcher's client reads it: that
    client refuses some URLs only when sending, and a port out of range only when connecting."""
    if not re.match(r"^https?://[^\s/]+", url):
        return "url must be an absolute http(s) URL"
    try:
        port = httpx.URL(url).port
    except httpx.InvalidURL as exc:
        return f"url is not a valid URL: {exc}"
    if port is not None and not 0 < port < 65536:
        return f"url's port {port} is not 1-65535"
    return None


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "channel": "webhook",
                    "url": "https://social-care.example.gov.uk/hooks/attendance",
                    "event_types": ["casework.referral.made", "cme.*"],
                    "description": "Children's social care front door",
                },
                {
                    "channel": "email",
                    "email": "cme.officer@example.gov.uk",
                    "event_types": ["cme.notification.overdue"],
                },
            ]
        },
    )

    channel: Literal["webhook", "email"] = "webhook"
    url: str | None = Field(None, max_length=2000, description="webhook: the endpoint deliveries are POSTed to")
    email: str | None = Field(None, max_length=320, description="email: the officer's address")
    event_types: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Event types to deliver, exact or by prefix (`cme.*`); see GET /v1/asyncapi.json",
    )
    digest: bool = Field(
        False, description="email: also a daily digest of the LA's casework and CME worklists (DIGEST_HOUR)"
    )
    urns: list[str] = Field(
        default_factory=list, max_length=1000, description="Only these schools of the LA (default: every school)"
    )
    description: str = Field("", max_length=500)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if not any(matches(p, t) for t in DELIVERABLE_TYPES)]
        if unknown:
            raise ValueError(f"no deliverable event type matches {unknown}; known: {', '.join(DELIVERABLE_TYPES)}")
        return value

    @field_validator("urns")
    @classmethod
    def _urns(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not re.fullmatch(URN_PATTERN, u)]
        if bad:
            raise ValueError(f"not URNs (6 digits): {bad}")
        return value

    @model_validator(mode="after")
    def _target(self) -> SubscriptionIn:
        if not self.event_types and not self.digest:
            raise ValueError("name at least one event type (or, for email, ask for the digest)")
        if self.digest and self.channel != "email":
            raise ValueError("the worklist digest is sent by email")
        if self.channel == "webhook":
            if not self.url or self.email:
                raise ValueError("a webhook subscription needs url (and no email)")
            problem = _url_problem(self.url)
            if problem:
                raise ValueError(problem)
        elif not self.email or self.url or not EMAIL_PATTERN.match(self.email):
            raise ValueError("an email subscription needs a valid email (and no url)")
        return self


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    la_code: str
    channel: str
    url: str | None
    email: str | None
    event_types: list[str]
    urns: list[str]
    description: str
    digest: bool
    last_digest_on: date | None
    created_at: datetime
    created_by: str
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, deliveries are signed with the previous secret too"
    )


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(description="The signing secret (webhooks). Shown once: store it now")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    previous_valid_seconds: int | None = Field(
        None, ge=0, le=7 * 86400, description="How long the old secret keeps signing too (default: 24 hours)"
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"since": "2026-01-05T08:00:00Z"}]})

    since: Instant = Field(description="Deliver again every event this subscription received from this instant")


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    subscription_id: int
    event_id: uuid.UUID
    event_type: str
    key: str
    status: Literal["pending", "delivered", "dead", "cancelled"]
    attempts: int
    created_at: datetime
    event_time: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    replay_of: int | None


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]
    payload: dict[str, Any]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None


class DeliveryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscription_id: RowId | None = None
    status: Literal["pending", "delivered", "dead", "cancelled"] | None = None
    event_type: str | None = None
    key: str | None = Field(None, description="The pupil's UPN")
    cursor: RowId | None = None
    limit: int = Field(100, ge=1, le=1000)


class LetterSentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"posted_on": "2026-01-06"}]})

    posted_on: date
    address_recorded: bool = Field(True, description="The letter carries the family's full address (seed 004)")


class LetterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    case_id: int
    la_code: str
    urn: str
    upn: str
    kind: str
    status: Literal["pending", "ready", "sent", "failed"]
    template_version: int | None = Field(description="The LA's template version used; 0: the platform's")
    created_at: datetime
    rendered_at: datetime | None
    sent_at: datetime | None
    posted_on: date | None
    sent_by: str | None
    case_action_id: int | None = Field(description="The casework evidence record of the posted letter")
    last_error: str | None


class LetterPage(BaseModel):
    items: list[LetterOut]
    next_cursor: int | None


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"body": '{% extends "_base.html.j2" %}{% block body %}<p>We are worried.</p>{% endblock %}'}]
        },
    )

    body: str = Field(min_length=1, max_length=50_000, description="Jinja2 HTML; may extend _base.html.j2")


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    la_code: str
    kind: str
    version: int
    body: str
    created_at: datetime | None
    created_by: str | None
