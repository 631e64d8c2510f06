"""subscriptions, deliveries, attempts and platform tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 13:29:24.327149
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_platform_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("urns", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        schema="notifications",
    )
    op.create_index("ix_subscriptions_la", "subscriptions", ["la_code", "id"], unique=False, schema="notifications")
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("replay_of", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["notifications.subscriptions.id"],
            name=op.f("fk_deliveries_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        schema="notifications",
    )
    op.create_index(
        "ix_deliveries_ledger", "deliveries", ["subscription_id", "id"], unique=False, schema="notifications"
    )
    op.create_index(
        "ix_deliveries_queue",
        "deliveries",
        ["subscription_id", "key", "id"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ux_deliveries_event",
        "deliveries",
        ["subscription_id", "event_id"],
        unique=True,
        schema="notifications",
        postgresql_where=sa.text("replay_of IS NULL"),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["notifications.deliveries.id"], name=op.f("fk_attempts_delivery_id_deliveries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        schema="notifications",
    )
    op.create_index(
        op.f("ix_notifications_attempts_delivery_id"), "attempts", ["delivery_id"], unique=False, schema="notifications"
    )
    create_platform_tables_v1("notifications")


def downgrade() -> None:
    for table in ("idempotency_keys", "applied_events", "outbox"):
        op.drop_table(table, schema="notifications")
    op.drop_index(op.f("ix_notifications_attempts_delivery_id"), table_name="attempts", schema="notifications")
    op.drop_table("attempts", schema="notifications")
    op.drop_index(
        "ux_deliveries_event",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("replay_of IS NULL"),
    )
    op.drop_index(
        "ix_deliveries_queue",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_deliveries_ledger", table_name="deliveries", schema="notifications")
    op.drop_table("deliveries", schema="notifications")
    op.drop_index("ix_subscriptions_la", table_name="subscriptions", schema="notifications")
    op.drop_table("subscriptions", schema="notifications")
