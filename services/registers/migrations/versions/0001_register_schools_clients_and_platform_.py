"""register, schools, clients and platform tables

Revision ID: 0001
Revises:
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
        "api_clients",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("urns", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=True),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_api_clients")),
        schema="registers",
    )
    op.create_table(
        "mark_amendments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("session", sa.String(length=2), nullable=False),
        sa.Column("previous_code", sa.String(length=2), nullable=False),
        sa.Column("previous_sub_code", sa.String(length=8), nullable=True),
        sa.Column("previous_minutes_late", sa.Integer(), nullable=True),
        sa.Column("previous_comment", sa.Text(), nullable=True),
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("sub_code", sa.String(length=8), nullable=True),
        sa.Column("minutes_late", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amended_by_name", sa.Text(), nullable=False),
        sa.Column("amended_by_position", sa.Text(), nullable=False),
        sa.Column("amended_by_client", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("submission_id", sa.UUID(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mark_amendments")),
        schema="registers",
    )
    op.create_index(
        "ix_mark_amendments_mark",
        "mark_amendments",
        ["urn", "upn", "date", "session"],
        unique=False,
        schema="registers",
    )
    op.create_table(
        "marks",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("session", sa.String(length=2), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("sub_code", sa.String(length=8), nullable=True),
        sa.Column("minutes_late", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.Column("submission_id", sa.UUID(), nullable=True),
        sa.Column("change_version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("urn", "date", "session", "upn", name=op.f("pk_marks")),
        schema="registers",
    )
    op.create_index("ix_marks_change_version", "marks", ["urn", "change_version"], unique=False, schema="registers")
    op.create_index("ix_marks_date", "marks", ["date"], unique=False, schema="registers")
    op.create_index("ix_marks_pupil", "marks", ["urn", "upn", "date"], unique=False, schema="registers")
    op.create_table(
        "retention_purges",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("run_by", sa.Text(), nullable=False),
        sa.Column("cutoff", sa.Date(), nullable=False),
        sa.Column("marks_deleted", sa.Integer(), nullable=False),
        sa.Column("amendments_deleted", sa.Integer(), nullable=False),
        sa.Column("submissions_deleted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_purges")),
        schema="registers",
    )
    op.create_table(
        "schools",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("independent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("data_sharing_agreement", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("calendar", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("change_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("urn", name=op.f("pk_schools")),
        schema="registers",
    )
    op.create_index(op.f("ix_registers_schools_la_code"), "schools", ["la_code"], unique=False, schema="registers")
    op.create_table(
        "submissions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("session", sa.String(length=2), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("taken_by_name", sa.Text(), nullable=True),
        sa.Column("taken_by_position", sa.Text(), nullable=True),
        sa.Column("marks", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("amended", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
        schema="registers",
    )
    op.create_index(
        "ix_submissions_register", "submissions", ["urn", "date", "session"], unique=False, schema="registers"
    )
    create_platform_tables_v1("registers")


def downgrade() -> None:
    for table in ("idempotency_keys", "applied_events", "outbox"):
        op.drop_table(table, schema="registers")
    op.drop_index("ix_submissions_register", table_name="submissions", schema="registers")
    op.drop_table("submissions", schema="registers")
    op.drop_index(op.f("ix_registers_schools_la_code"), table_name="schools", schema="registers")
    op.drop_table("schools", schema="registers")
    op.drop_table("retention_purges", schema="registers")
    op.drop_index("ix_marks_pupil", table_name="marks", schema="registers")
    op.drop_index("ix_marks_date", table_name="marks", schema="registers")
    op.drop_index("ix_marks_change_version", table_name="marks", schema="registers")
    op.drop_table("marks", schema="registers")
    op.drop_index("ix_mark_amendments_mark", table_name="mark_amendments", schema="registers")
    op.drop_table("mark_amendments", schema="registers")
    op.drop_table("api_clients", schema="registers")
