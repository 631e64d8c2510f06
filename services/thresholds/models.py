"""Running attendance: every version of every mark seen, per-enrolment totals, policies, alerts.

Marks are kept as versions (key plus the registers' `change_version`), so the state does not
depend on delivery order: the current mark of a session is its highest version, whatever
arrived first, and `as_of` queries read the versions recorded before an instant.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import RecordReadColumns
from shared.db import make_base

SCHEMA = "thresholds"
Base = make_base(SCHEMA)


class School(Base):
    """What this service knows of a school: its LA and calendar (from `attendance.school.updated`)."""

    __tablename__ = "schools"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    la_code: Mapped[str] = mapped_column(String(3), index=True)
    calendar: Mapped[dict] = mapped_column(JSONB, default=dict)


class MarkVersion(Base):
    __tablename__ = "mark_versions"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    upn: Mapped[str] = mapped_column(String(13), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    session: Mapped[str] = mapped_column(String(2), primary_key=True)
    change_version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(4))
    category: Mapped[str] = mapped_column(String(3))
    possible: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EnrolmentTotals(Base):
    """Year-to-date counts per pupil enrolment (school, UPN, academic year), kept by deltas."""

    __tablename__ = "enrolment_totals"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    upn: Mapped[str] = mapped_column(String(13), primary_key=True)
    academic_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    possible_sessions: Mapped[int] = mapped_column(Integer, default=0)
    present_sessions: Mapped[int] = mapped_column(Integer, default=0)
    approved_activity_sessions: Mapped[int] = mapped_column(Integer, default=0)
    authorised_absence_sessions: Mapped[int] = mapped_column(Integer, default=0)
    unauthorised_absence_sessions: Mapped[int] = mapped_column(Integer, default=0)
    illness_sessions: Mapped[int] = mapped_column(Integer, default=0)
    late_sessions: Mapped[int] = mapped_column(Integer, default=0)
    last_date: Mapped[date | None] = mapped_column(Date)


class Policy(Base):
    """One version of an LA's policy document; versions are never changed, so they are the audit."""

    __tablename__ = "policies"

    la_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # At most one raised alert per pupil enrolment, rule and step.
        Index(
            "ux_alerts_active",
            "urn",
            "upn",
            "rule_id",
            "step",
            unique=True,
            postgresql_where=text("status = 'raised'"),
        ),
        Index("ix_alerts_la", "la_code", "id"),
        Index("ix_alerts_pupil", "upn", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    urn: Mapped[str] = mapped_column(String(6), index=True)
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    rule_id: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(Text)  # raised | cleared | retracted
    policy_version: Mapped[int] = mapped_column(Integer)
    figures: Mapped[dict] = mapped_column(JSONB)
    window_from: Mapped[date] = mapped_column(Date)
    window_to: Mapped[date] = mapped_column(Date)
    sessions: Mapped[list] = mapped_column(JSONB)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clear_reason: Mapped[str | None] = mapped_column(Text)


class RecordRead(RecordReadColumns, Base):
    """Who read which pupil's record through this service (shared.audit)."""
