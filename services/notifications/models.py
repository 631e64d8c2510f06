"""Subscriptions, the deliveries made to them (the ledger) and every attempt."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.audit import RecordReadColumns
from shared.db import make_base

SCHEMA = "notifications"
Base = make_base(SCHEMA)


class Subscription(Base):
    """Who hears what: a webhook endpoint of an LA system, or an officer's email address."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_la", "la_code", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    la_code: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(Text)  # webhook | email
    url: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text))
    urns: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)  # empty: every school of the LA
    description: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[bool] = mapped_column(Boolean, default=False)  # email: a daily worklist digest too
    last_digest_on: Mapped[date | None] = mapped_column(Date)
    # Signing needs the secret itself (HMAC), so it is stored, encrypted under SECRETS_KEY
    # (shared.encryption), and never shown again after creation or rotation. A rotated-out secret
    # keeps signing until `previous_secret_expires_at`.
    secret: Mapped[str | None] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Delivery(Base):
    """One event for one subscriber: pending until delivered, or dead after the retry budget."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # A redelivered event (the consumer's at-least-once) never makes a second delivery.
        Index(
            "ux_deliveries_event",
            "subscription_id",
            "event_id",
            unique=True,
            postgresql_where=text("replay_of IS NULL"),
        ),
        # The dispatcher's queue: the oldest pending delivery per subscriber and pupil goes first.
        Index(
            "ix_deliveries_queue",
            "subscription_id",
            "key",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_deliveries_ledger", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.subscriptions.id"))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)  # the pupil's UPN: deliveries for one key go in order
    payload: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text)  # pending | delivered | dead | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    replay_of: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Base):
    """One try at a delivery: when, how long, what came back."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA}.deliveries.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)  # delivered | failed


class LetterTemplate(Base):
    """An LA's version of a letter; the newest version of a kind is used, the platform's file if none."""

    __tablename__ = "letter_templates"

    la_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)


class Letter(Base):
    """A stage letter to a pupil's parents: rendered from the template in force with the pupil's
    figures, then recorded on the case as evidence when the school or officer has posted it."""

    __tablename__ = "letters"
    __table_args__ = (Index("ix_letters_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)  # the escalation that asked
    case_id: Mapped[int] = mapped_column(BigInteger, index=True)
    la_code: Mapped[str] = mapped_column(String(3))
    urn: Mapped[str] = mapped_column(String(6), index=True)
    upn: Mapped[str] = mapped_column(String(13))
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)  # pending | ready | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    template_version: Mapped[int | None] = mapped_column(Integer)  # 0: the platform's template
    html: Mapped[str | None] = mapped_column(Text)
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rendered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    posted_on: Mapped[date | None] = mapped_column(Date)
    sent_by: Mapped[str | None] = mapped_column(Text)
    case_action_id: Mapped[int | None] = mapped_column(BigInteger)


class RecordRead(RecordReadColumns, Base):
    """Who read which pupil's record through this service (shared.audit)."""
