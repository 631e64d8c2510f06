"""Cases, their evidence records, their stage history and their clocks."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import RecordReadColumns
from shared.db import make_base

SCHEMA = "casework"
Base = make_base(SCHEMA)


class School(Base):
    """What casework knows of a school: its LA and calendar (from `attendance.school.updated`)."""

    __tablename__ = "schools"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    la_code: Mapped[str] = mapped_column(String(3), index=True)
    calendar: Mapped[dict] = mapped_column(JSONB, default=dict)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # One open case per pupil enrolment.
        Index("ux_cases_open", "urn", "upn", unique=True, postgresql_where=text("state <> 'closed'")),
        Index("ix_cases_la", "la_code", "state", "id"),
        Index("ix_cases_pupil", "upn", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    urn: Mapped[str] = mapped_column(String(6), index=True)
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    state: Mapped[str] = mapped_column(Text)
    state_entered_on: Mapped[date] = mapped_column(Date)
    previous_state: Mapped[str | None] = mapped_column(Text)
    stage_2_started_on: Mapped[date | None] = mapped_column(Date)
    investigation_started_on: Mapped[date | None] = mapped_column(Date)
    close_outcome: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Optimistic locking: writers send the version they read (If-Match); a stale one gets 409.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class CaseAction(Base):
    """A dated, attributed evidence record (domain.md §5): what the bundle for Stage 3 and court
    is assembled from. Never changed once recorded."""

    __tablename__ = "case_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.cases.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    occurred_on: Mapped[date] = mapped_column(Date)
    details: Mapped[dict] = mapped_column(JSONB)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)
    recorded_by_role: Mapped[str] = mapped_column(Text)


class CaseTransition(Base):
    """The case's history: every workflow event applied, by whom and with what."""

    __tablename__ = "case_transitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.cases.id"), index=True)
    event: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str | None] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by: Mapped[str] = mapped_column(Text)
    by_role: Mapped[str] = mapped_column(Text)
    alert_id: Mapped[int | None] = mapped_column(BigInteger)


class Clock(Base):
    """A due date the case must meet: a review, a letter, an APM follow-up, a payment."""

    __tablename__ = "clocks"
    __table_args__ = (Index("ix_clocks_open_due", "status", "due_on"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.cases.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    earliest_on: Mapped[date | None] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(Text, default="open")  # open | due | overdue | met | stopped
    detail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RecordRead(RecordReadColumns, Base):
    """Who read which pupil's record through this service (shared.audit)."""
