"""letters and letter templates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:36:02.499651
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "letter_templates",
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("la_code", "kind", "version", name=op.f("pk_letter_templates")),
        schema="notifications",
    )
    op.create_table(
        "letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("template_version", sa.Integer(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_on", sa.Date(), nullable=True),
        sa.Column("sent_by", sa.Text(), nullable=True),
        sa.Column("case_action_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_letters")),
        sa.UniqueConstraint("event_id", name=op.f("uq_letters_event_id")),
        schema="notifications",
    )
    op.create_index(
        "ix_letters_pending",
        "letters",
        ["next_attempt_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_notifications_letters_case_id"), "letters", ["case_id"], unique=False, schema="notifications"
    )
    op.create_index(op.f("ix_notifications_letters_urn"), "letters", ["urn"], unique=False, schema="notifications")


def downgrade() -> None:
    op.drop_index(op.f("ix_notifications_letters_urn"), table_name="letters", schema="notifications")
    op.drop_index(op.f("ix_notifications_letters_case_id"), table_name="letters", schema="notifications")
    op.drop_index(
        "ix_letters_pending",
        table_name="letters",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("letters", schema="notifications")
    op.drop_table("letter_templates", schema="notifications")
