"""The attendance register: schools, marks, the amendment audit trail, submissions, API clients."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import RecordReadColumns
from shared.db import make_base

SCHEMA = "registers"
Base = make_base(SCHEMA)


class School(Base):
    __tablename__ = "schools"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    la_code: Mapped[str] = mapped_column(String(3), index=True)
    phase: Mapped[str] = mapped_column(Text)
    independent: Mapped[bool] = mapped_column(Boolean, default=False)
    data_sharing_agreement: Mapped[bool] = mapped_column(Boolean, default=False)
    calendar: Mapped[dict] = mapped_column(JSONB, default=dict)
    # Per-school change-feed counter. Writers lock this row, so versions follow commit order.
    change_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Mark(Base):
    """One pupil's mark for one session. The code is data; the key is (URN, date, session, UPN)."""

    __tablename__ = "marks"
    __table_args__ = (
        Index("ix_marks_pupil", "urn", "upn", "date"),
        Index("ix_marks_change_version", "urn", "change_version"),
        Index("ix_marks_date", "date"),
    )

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    session: Mapped[str] = mapped_column(String(2), primary_key=True)
    upn: Mapped[str] = mapped_column(String(13), primary_key=True)
    code: Mapped[str] = mapped_column(String(2))
    sub_code: Mapped[str | None] = mapped_column(String(8))
    minutes_late: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)
    submission_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    change_version: Mapped[int] = mapped_column(BigInteger)


class MarkAmendment(Base):
    """Audit trail (Regs 2024): original entry, amended entry, reason, when, and who (name and
    position). Written for every change of an existing mark, whichever way it arrives."""

    __tablename__ = "mark_amendments"
    __table_args__ = (Index("ix_mark_amendments_mark", "urn", "upn", "date", "session"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    urn: Mapped[str] = mapped_column(String(6))
    upn: Mapped[str] = mapped_column(String(13))
    date: Mapped[date] = mapped_column(Date)
    session: Mapped[str] = mapped_column(String(2))
    previous_code: Mapped[str] = mapped_column(String(2))
    previous_sub_code: Mapped[str | None] = mapped_column(String(8))
    previous_minutes_late: Mapped[int | None] = mapped_column(Integer)
    previous_comment: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str] = mapped_column(String(2))
    sub_code: Mapped[str | None] = mapped_column(String(8))
    minutes_late: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    amended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    amended_by_name: Mapped[str] = mapped_column(Text)
    amended_by_position: Mapped[str] = mapped_column(Text)
    amended_by_client: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # "register" (re-posted) or "amendment"
    submission_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class Submission(Base):
    """One accepted POST of a register (a class or a whole school, one session)."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_register", "urn", "date", "session"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    urn: Mapped[str] = mapped_column(String(6))
    date: Mapped[date] = mapped_column(Date)
    session: Mapped[str] = mapped_column(String(2))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    client: Mapped[str] = mapped_column(Text)
    taken_by_name: Mapped[str | None] = mapped_column(Text)
    taken_by_position: Mapped[str | None] = mapped_column(Text)
    marks: Mapped[int] = mapped_column(Integer)
    new: Mapped[int] = mapped_column(Integer)
    unchanged: Mapped[int] = mapped_column(Integer)
    amended: Mapped[int] = mapped_column(Integer)


class RetentionPurge(Base):
    """Audit of every retention run: when, who, the cut-off and what was deleted."""

    __tablename__ = "retention_purges"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    run_by: Mapped[str] = mapped_column(Text)
    cutoff: Mapped[date] = mapped_column(Date)
    marks_deleted: Mapped[int] = mapped_column(Integer)
    amendments_deleted: Mapped[int] = mapped_column(Integer)
    submissions_deleted: Mapped[int] = mapped_column(Integer)


class ApiClient(Base):
    """A machine credential (an MIS, an LA system) that exchanges its secret for bearer tokens."""

    __tablename__ = "api_clients"

    client_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    urns: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    la_code: Mapped[str | None] = mapped_column(String(3))
    secret_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenFailure(Base):
    """A refused client-credentials exchange. Counted per client id and per source address to slow
    down secret guessing; kept here, not in memory, so every replica counts the same attempts."""

    __tablename__ = "token_failures"
    __table_args__ = (
        Index("ix_token_failures_client", "client_id", "at"),
        Index("ix_token_failures_address", "address", "at"),
        Index("ix_token_failures_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RecordRead(RecordReadColumns, Base):
    """Who read which pupil's record through this service (shared.audit)."""
