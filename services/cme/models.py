"""The admission register (roll), its notification clocks, matches, and CME cases with their enquiries.

Names, addresses and phone numbers of a deletion return live here only (`deletions.return_details`,
`deletions.destination_address`), never on the bus, and are purged with the register entries.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import RecordReadColumns
from shared.db import make_base

SCHEMA = "cme"
Base = make_base(SCHEMA)


class School(Base):
    """What CME knows of a school (from `attendance.school.updated`): its LA, status and calendar."""

    __tablename__ = "schools"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    la_code: Mapped[str] = mapped_column(String(3), index=True)
    independent: Mapped[bool] = mapped_column(Boolean, default=False)
    data_sharing_agreement: Mapped[bool] = mapped_column(Boolean, default=False)
    calendar: Mapped[dict] = mapped_column(JSONB, default=dict)


class NotificationPolicyVersion(Base):
    """An LA's notification policy (`shared.domain.roll.NotificationPolicy`); the newest version
    applies to clocks started after it. Older versions are kept as the audit of who changed what."""

    __tablename__ = "notification_policies"

    la_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[dict] = mapped_column(JSONB)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_by: Mapped[str] = mapped_column(Text)


class Admission(Base):
    """A name entered on a school's admission register: notified by the school, or detected from its
    marks and awaiting the school's return."""

    __tablename__ = "admissions"
    __table_args__ = (
        # One live entry per pupil per school; a later re-admission is a new entry.
        Index("ux_admissions_on_roll", "urn", "upn", unique=True, postgresql_where=text("deleted_on IS NULL")),
        Index("ix_admissions_pupil", "la_code", "upn"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    urn: Mapped[str] = mapped_column(String(6))
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    source: Mapped[str] = mapped_column(Text)  # notified | detected
    admitted_on: Mapped[date] = mapped_column(Date)
    first_mark_on: Mapped[date | None] = mapped_column(Date)
    nc_year: Mapped[str | None] = mapped_column(Text)
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    characteristics: Mapped[dict] = mapped_column(JSONB, default=dict)
    previous_urn: Mapped[str | None] = mapped_column(String(6))
    previous_school: Mapped[str | None] = mapped_column(Text)
    dual_registration: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_on: Mapped[date | None] = mapped_column(Date)
    unmarked_flagged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Deletion(Base):
    """A name deleted from a school's admission register, with its ground and the deletion return."""

    __tablename__ = "deletions"
    __table_args__ = (Index("ix_deletions_pupil", "la_code", "upn"), Index("ix_deletions_school", "urn", "id"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    admission_id: Mapped[int | None] = mapped_column(ForeignKey(f"{SCHEMA}.admissions.id"), unique=True)
    urn: Mapped[str] = mapped_column(String(6))
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    deleted_on: Mapped[date] = mapped_column(Date)
    ground: Mapped[str] = mapped_column(Text)
    ground_code: Mapped[str] = mapped_column(Text)
    destination_urn: Mapped[str | None] = mapped_column(String(6))
    destination_la_code: Mapped[str | None] = mapped_column(String(3))
    destination_address: Mapped[str | None] = mapped_column(Text)
    return_details: Mapped[dict | None] = mapped_column(JSONB)
    matched_admission_id: Mapped[int | None] = mapped_column(BigInteger)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RollAmendment(Base):
    """Audit of every change to an accepted admission or deletion: before, after, who, when, why."""

    __tablename__ = "roll_amendments"
    __table_args__ = (Index("ix_roll_amendments_entry", "entry", "entry_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    entry: Mapped[str] = mapped_column(Text)  # admission | deletion
    entry_id: Mapped[int] = mapped_column(BigInteger)
    before: Mapped[dict] = mapped_column(JSONB)
    after: Mapped[dict] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    amended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    amended_by: Mapped[str] = mapped_column(Text)


class NotificationClock(Base):
    """A school's return owed to the LA for one addition or deletion, against its deadline."""

    __tablename__ = "notification_clocks"
    __table_args__ = (
        Index("ix_notification_clocks_school", "urn", "started_on"),
        Index("ix_notification_clocks_open", "status", "due_on"),
        # One clock per return: a replayed or amended entry never starts a second.
        Index(
            "ux_notification_clocks_admission",
            "kind",
            "admission_id",
            unique=True,
            postgresql_where=text("admission_id IS NOT NULL"),
        ),
        Index(
            "ux_notification_clocks_deletion",
            "deletion_id",
            unique=True,
            postgresql_where=text("deletion_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)  # addition | deletion
    # The roll entry the return is about; a deletion of a pupil the platform never saw admitted has
    # only its deletion, and a deletion owed but not yet made only its admission.
    admission_id: Mapped[int | None] = mapped_column(BigInteger)
    deletion_id: Mapped[int | None] = mapped_column(BigInteger)
    urn: Mapped[str] = mapped_column(String(6))
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    started_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    received_on: Mapped[date | None] = mapped_column(Date)
    # pending (owed, not yet due) | due (due today) | overdue (missing) | on_time | late
    status: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[int] = mapped_column(Integer)
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PupilMarks(Base):
    """The first and last session a pupil was marked at a school (sessions numbered as in
    `service.session_number`): what detects unnotified joiners and pupils no longer marked."""

    __tablename__ = "pupil_marks"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    upn: Mapped[str] = mapped_column(String(13), primary_key=True)
    first_session: Mapped[int] = mapped_column(Integer)
    last_session: Mapped[int] = mapped_column(Integer)


class SchoolSession(Base):
    """A session for which the school has taken a register."""

    __tablename__ = "school_sessions"

    urn: Mapped[str] = mapped_column(String(6), primary_key=True)
    session: Mapped[int] = mapped_column(Integer, primary_key=True)


class RollMatch(Base):
    __tablename__ = "roll_matches"
    __table_args__ = (
        Index("ux_roll_matches_deletion", "deletion_id", unique=True, postgresql_where=text("deletion_id IS NOT NULL")),
        Index("ux_roll_matches_pair", "kind", "admission_id", "other_admission_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)  # transfer | dual_registration
    la_code: Mapped[str] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13), index=True)
    admission_id: Mapped[int] = mapped_column(BigInteger)
    deletion_id: Mapped[int | None] = mapped_column(BigInteger)
    other_admission_id: Mapped[int | None] = mapped_column(BigInteger)
    matched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CmeCase(Base):
    """A child who may be missing education, on the LA's CME register until located."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ux_cases_open", "la_code", "upn", unique=True, postgresql_where=text("status = 'open'")),
        Index("ix_cases_register", "la_code", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    la_code: Mapped[str] = mapped_column(String(3))
    urn: Mapped[str | None] = mapped_column(String(6))
    upn: Mapped[str] = mapped_column(String(13))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="open")  # open | closed
    opened_on: Mapped[date] = mapped_column(Date)
    opened_by: Mapped[str] = mapped_column(Text)
    deletion_id: Mapped[int | None] = mapped_column(BigInteger)
    absence_started_on: Mapped[date | None] = mapped_column(Date)
    deletion_allowed_from: Mapped[date | None] = mapped_column(Date)
    outcome: Mapped[str | None] = mapped_column(Text)
    located_urn: Mapped[str | None] = mapped_column(String(6))
    closed_on: Mapped[date | None] = mapped_column(Date)
    closed_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CaseEntry(Base):
    """The case's log: opened, alerts, enquiries, matches, closure; by whom and with what."""

    __tablename__ = "case_entries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.cases.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict] = mapped_column(JSONB)


class CaseEnquiry(Base):
    """One reasonable enquiry (`shared.domain.roll.Enquiry`), as evidence for the case and a deletion."""

    __tablename__ = "enquiries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.cases.id"), index=True)
    made_on: Mapped[date] = mapped_column(Date)
    party: Mapped[str] = mapped_column(Text)
    officer: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    notes: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)


class RecordRead(RecordReadColumns, Base):
    """Who read which pupil's record through this service (shared.audit)."""
