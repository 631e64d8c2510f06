"""The platform's clock: English schools, so 'today' is today in London."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def school_today() -> date:
    """Register dates are English school days: 'today' is today in London, whatever the host's zone."""
    return datetime.now(LONDON).date()
