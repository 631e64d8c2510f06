"""cases, evidence, history, clocks and platform tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:30:11.379149
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
        "cases",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("state_entered_on", sa.Date(), nullable=False),
        sa.Column("previous_state", sa.Text(), nullable=True),
        sa.Column("stage_2_started_on", sa.Date(), nullable=True),
        sa.Column("investigation_started_on", sa.Date(), nullable=True),
        sa.Column("close_outcome", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        schema="casework",
    )
    op.create_index("ix_cases_la", "cases", ["la_code", "state", "id"], unique=False, schema="casework")
    op.create_index("ix_cases_pupil", "cases", ["upn", "id"], unique=False, schema="casework")
    op.create_index(op.f("ix_casework_cases_urn"), "cases", ["urn"], unique=False, schema="casework")
    op.create_index(
        "ux_cases_open",
        "cases",
        ["urn", "upn"],
        unique=True,
        schema="casework",
        postgresql_where=sa.text("state <> 'closed'"),
    )
    op.create_table(
        "schools",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("calendar", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("urn", name=op.f("pk_schools")),
        schema="casework",
    )
    op.create_index(op.f("ix_casework_schools_la_code"), "schools", ["la_code"], unique=False, schema="casework")
    op.create_table(
        "case_actions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.Column("recorded_by_role", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["casework.cases.id"], name=op.f("fk_case_actions_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_actions")),
        schema="casework",
    )
    op.create_index(
        op.f("ix_casework_case_actions_case_id"), "case_actions", ["case_id"], unique=False, schema="casework"
    )
    op.create_table(
        "case_transitions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=True),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("by_role", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["casework.cases.id"], name=op.f("fk_case_transitions_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_transitions")),
        schema="casework",
    )
    op.create_index(
        op.f("ix_casework_case_transitions_case_id"), "case_transitions", ["case_id"], unique=False, schema="casework"
    )
    op.create_table(
        "clocks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("earliest_on", sa.Date(), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["casework.cases.id"], name=op.f("fk_clocks_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clocks")),
        schema="casework",
    )
    op.create_index(op.f("ix_casework_clocks_case_id"), "clocks", ["case_id"], unique=False, schema="casework")
    op.create_index("ix_clocks_open_due", "clocks", ["status", "due_on"], unique=False, schema="casework")
    create_platform_tables_v1("casework")


def downgrade() -> None:
    for table in ("idempotency_keys", "applied_events", "outbox"):
        op.drop_table(table, schema="casework")
    op.drop_index("ix_clocks_open_due", table_name="clocks", schema="casework")
    op.drop_index(op.f("ix_casework_clocks_case_id"), table_name="clocks", schema="casework")
    op.drop_table("clocks", schema="casework")
    op.drop_index(op.f("ix_casework_case_transitions_case_id"), table_name="case_transitions", schema="casework")
    op.drop_table("case_transitions", schema="casework")
    op.drop_index(op.f("ix_casework_case_actions_case_id"), table_name="case_actions", schema="casework")
    op.drop_table("case_actions", schema="casework")
    op.drop_index(op.f("ix_casework_schools_la_code"), table_name="schools", schema="casework")
    op.drop_table("schools", schema="casework")
    op.drop_index("ux_cases_open", table_name="cases", schema="casework", postgresql_where=sa.text("state <> 'closed'"))
    op.drop_index(op.f("ix_casework_cases_urn"), table_name="cases", schema="casework")
    op.drop_index("ix_cases_pupil", table_name="cases", schema="casework")
    op.drop_index("ix_cases_la", table_name="cases", schema="casework")
    op.drop_table("cases", schema="casework")
