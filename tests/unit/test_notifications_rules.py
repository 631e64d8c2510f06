"""Pure pieces of the notifications service: event-type filters, retry backoff, the email of an event."""

from __future__ import annotations

import random

import orjson
import pytest

from services.notifications.schemas import DELIVERABLE_TYPES, matches
from services.notifications.service import backoff, email_for, endpoint_problem
from services.notifications.settings import NotificationsSettings


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("cme.*", "cme.case.opened", True),
        ("cme.*", "cme", False),
        ("cme.*", "casework.case.opened", False),
        ("casework.referral.made", "casework.referral.made", True),
        ("casework.referral.*", "casework.referral.declined", True),
        ("casework.referral", "casework.referral.made", False),
    ],
)
def test_event_type_filters(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_marks_are_not_deliverable_but_escalations_are() -> None:
    assert "attendance.mark.recorded" not in DELIVERABLE_TYPES
    assert {"casework.referral.made", "attendance.alert.raised", "cme.case.opened"} <= set(DELIVERABLE_TYPES)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    settings = NotificationsSettings(retry_base_seconds=5, retry_max_seconds=3600)
    rng = random.Random(1)
    for attempts, ceiling in [(1, 5), (2, 10), (3, 20), (8, 640), (10, 2560), (11, 3600), (20, 3600)]:
        delays = [backoff(attempts, settings, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling, attempts
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not all at once


def test_email_is_the_thin_event_with_its_link() -> None:
    event = {
        "id": "b3f0c1de-0000-4000-8000-000000000001",
        "type": "cme.case.opened",
        "time": "2026-01-05T09:00:00Z",
        "data": {
            "case_id": 7,
            "la_code": "801",
            "urn": "100001",
            "upn": "A801200025001",
            "reason": "reported",
            "link": "https://cme.example/v1/cme/cases/7",
        },
    }
    message = email_for(orjson.dumps(event).decode(), "officer@example.gov.uk", "platform@example.gov.uk")
    assert message["Subject"] == "[Attendance] cme case opened: pupil A801200025001 at school 100001"
    assert message["To"] == "officer@example.gov.uk"
    body = message.get_content()
    assert "reason: reported" in body and "Details: https://cme.example/v1/cme/cases/7" in body


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://social-care.example.gov.uk/hooks", None),
        ("https://203.0.113.9/hooks", "reserved"),  # documentation range: not global
        ("https://8.8.8.8/hooks", None),
        ("http://social-care.example.gov.uk/hooks", "https"),
        ("https://localhost:8443/hooks", "not on the internet"),
        ("https://127.0.0.1/hooks", "loopback"),
        ("https://10.1.2.3/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "reserved"),
        ("https://[::1]/hooks", "loopback"),
        ("https://db.internal/hooks", "not on the internet"),
    ],
)
def test_webhook_endpoints_must_be_public_https(url: str, problem: str | None) -> None:
    found = endpoint_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found), found
