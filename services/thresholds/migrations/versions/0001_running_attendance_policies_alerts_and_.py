"""running attendance, policies, alerts and platform tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:57:45.191596
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
        "alerts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("rule_id", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("window_from", sa.Date(), nullable=False),
        sa.Column("window_to", sa.Date(), nullable=False),
        sa.Column("sessions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        schema="thresholds",
    )
    op.create_index("ix_alerts_la", "alerts", ["la_code", "id"], unique=False, schema="thresholds")
    op.create_index("ix_alerts_pupil", "alerts", ["upn", "id"], unique=False, schema="thresholds")
    op.create_index(op.f("ix_thresholds_alerts_urn"), "alerts", ["urn"], unique=False, schema="thresholds")
    op.create_index(
        "ux_alerts_active",
        "alerts",
        ["urn", "upn", "rule_id", "step"],
        unique=True,
        schema="thresholds",
        postgresql_where=sa.text("status = 'raised'"),
    )
    op.create_table(
        "enrolment_totals",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("academic_year", sa.Integer(), nullable=False),
        sa.Column("possible_sessions", sa.Integer(), nullable=False),
        sa.Column("present_sessions", sa.Integer(), nullable=False),
        sa.Column("approved_activity_sessions", sa.Integer(), nullable=False),
        sa.Column("authorised_absence_sessions", sa.Integer(), nullable=False),
        sa.Column("unauthorised_absence_sessions", sa.Integer(), nullable=False),
        sa.Column("illness_sessions", sa.Integer(), nullable=False),
        sa.Column("late_sessions", sa.Integer(), nullable=False),
        sa.Column("last_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("urn", "upn", "academic_year", name=op.f("pk_enrolment_totals")),
        schema="thresholds",
    )
    op.create_table(
        "mark_versions",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("session", sa.String(length=2), nullable=False),
        sa.Column("change_version", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=4), nullable=False),
        sa.Column("category", sa.String(length=3), nullable=False),
        sa.Column("possible", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("urn", "upn", "date", "session", "change_version", name=op.f("pk_mark_versions")),
        schema="thresholds",
    )
    op.create_table(
        "policies",
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("la_code", "version", name=op.f("pk_policies")),
        schema="thresholds",
    )
    op.create_table(
        "schools",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("calendar", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("urn", name=op.f("pk_schools")),
        schema="thresholds",
    )
    op.create_index(op.f("ix_thresholds_schools_la_code"), "schools", ["la_code"], unique=False, schema="thresholds")
    create_platform_tables_v1("thresholds")


def downgrade() -> None:
    for table in ("idempotency_keys", "applied_events", "outbox"):
        op.drop_table(table, schema="thresholds")
    op.drop_index(op.f("ix_thresholds_schools_la_code"), table_name="schools", schema="thresholds")
    op.drop_table("schools", schema="thresholds")
    op.drop_table("policies", schema="thresholds")
    op.drop_table("mark_versions", schema="thresholds")
    op.drop_table("enrolment_totals", schema="thresholds")
    op.drop_index(
        "ux_alerts_active", table_name="alerts", schema="thresholds", postgresql_where=sa.text("status = 'raised'")
    )
    op.drop_index(op.f("ix_thresholds_alerts_urn"), table_name="alerts", schema="thresholds")
    op.drop_index("ix_alerts_pupil", table_name="alerts", schema="thresholds")
    op.drop_index("ix_alerts_la", table_name="alerts", schema="thresholds")
    op.drop_table("alerts", schema="thresholds")
