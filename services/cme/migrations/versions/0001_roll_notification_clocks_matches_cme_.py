"""roll, notification clocks, matches, CME cases and platform tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 13:03:10.548395
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
        "admissions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("admitted_on", sa.Date(), nullable=False),
        sa.Column("first_mark_on", sa.Date(), nullable=True),
        sa.Column("nc_year", sa.Text(), nullable=True),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("characteristics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("previous_urn", sa.String(length=6), nullable=True),
        sa.Column("previous_school", sa.Text(), nullable=True),
        sa.Column("dual_registration", sa.Boolean(), nullable=False),
        sa.Column("deleted_on", sa.Date(), nullable=True),
        sa.Column("unmarked_flagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admissions")),
        schema="cme",
    )
    op.create_index("ix_admissions_pupil", "admissions", ["la_code", "upn"], unique=False, schema="cme")
    op.create_index(
        "ux_admissions_on_roll",
        "admissions",
        ["urn", "upn"],
        unique=True,
        schema="cme",
        postgresql_where=sa.text("deleted_on IS NULL"),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("urn", sa.String(length=6), nullable=True),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("opened_by", sa.Text(), nullable=False),
        sa.Column("deletion_id", sa.BigInteger(), nullable=True),
        sa.Column("absence_started_on", sa.Date(), nullable=True),
        sa.Column("deletion_allowed_from", sa.Date(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("located_urn", sa.String(length=6), nullable=True),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("closed_by", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        schema="cme",
    )
    op.create_index("ix_cases_register", "cases", ["la_code", "status", "id"], unique=False, schema="cme")
    op.create_index(
        "ux_cases_open",
        "cases",
        ["la_code", "upn"],
        unique=True,
        schema="cme",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "notification_clocks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("admission_id", sa.BigInteger(), nullable=True),
        sa.Column("deletion_id", sa.BigInteger(), nullable=True),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_clocks")),
        schema="cme",
    )
    op.create_index(
        "ix_notification_clocks_open", "notification_clocks", ["status", "due_on"], unique=False, schema="cme"
    )
    op.create_index(
        "ix_notification_clocks_school", "notification_clocks", ["urn", "started_on"], unique=False, schema="cme"
    )
    op.create_index(
        "ux_notification_clocks_admission",
        "notification_clocks",
        ["kind", "admission_id"],
        unique=True,
        schema="cme",
        postgresql_where=sa.text("admission_id IS NOT NULL"),
    )
    op.create_index(
        "ux_notification_clocks_deletion",
        "notification_clocks",
        ["deletion_id"],
        unique=True,
        schema="cme",
        postgresql_where=sa.text("deletion_id IS NOT NULL"),
    )
    op.create_table(
        "notification_policies",
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("la_code", "version", name=op.f("pk_notification_policies")),
        schema="cme",
    )
    op.create_table(
        "pupil_marks",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("first_session", sa.Integer(), nullable=False),
        sa.Column("last_session", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("urn", "upn", name=op.f("pk_pupil_marks")),
        schema="cme",
    )
    op.create_table(
        "roll_amendments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amended_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roll_amendments")),
        schema="cme",
    )
    op.create_index("ix_roll_amendments_entry", "roll_amendments", ["entry", "entry_id"], unique=False, schema="cme")
    op.create_table(
        "roll_matches",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("admission_id", sa.BigInteger(), nullable=False),
        sa.Column("deletion_id", sa.BigInteger(), nullable=True),
        sa.Column("other_admission_id", sa.BigInteger(), nullable=True),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roll_matches")),
        schema="cme",
    )
    op.create_index(op.f("ix_cme_roll_matches_upn"), "roll_matches", ["upn"], unique=False, schema="cme")
    op.create_index(
        "ux_roll_matches_deletion",
        "roll_matches",
        ["deletion_id"],
        unique=True,
        schema="cme",
        postgresql_where=sa.text("deletion_id IS NOT NULL"),
    )
    op.create_index(
        "ux_roll_matches_pair",
        "roll_matches",
        ["kind", "admission_id", "other_admission_id"],
        unique=True,
        schema="cme",
    )
    op.create_table(
        "school_sessions",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("session", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("urn", "session", name=op.f("pk_school_sessions")),
        schema="cme",
    )
    op.create_table(
        "schools",
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("independent", sa.Boolean(), nullable=False),
        sa.Column("data_sharing_agreement", sa.Boolean(), nullable=False),
        sa.Column("calendar", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("urn", name=op.f("pk_schools")),
        schema="cme",
    )
    op.create_index(op.f("ix_cme_schools_la_code"), "schools", ["la_code"], unique=False, schema="cme")
    op.create_table(
        "case_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cme.cases.id"], name=op.f("fk_case_entries_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_entries")),
        schema="cme",
    )
    op.create_index(op.f("ix_cme_case_entries_case_id"), "case_entries", ["case_id"], unique=False, schema="cme")
    op.create_table(
        "deletions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("admission_id", sa.BigInteger(), nullable=True),
        sa.Column("urn", sa.String(length=6), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("deleted_on", sa.Date(), nullable=False),
        sa.Column("ground", sa.Text(), nullable=False),
        sa.Column("ground_code", sa.Text(), nullable=False),
        sa.Column("destination_urn", sa.String(length=6), nullable=True),
        sa.Column("destination_la_code", sa.String(length=3), nullable=True),
        sa.Column("destination_address", sa.Text(), nullable=True),
        sa.Column("return_details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("matched_admission_id", sa.BigInteger(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["admission_id"], ["cme.admissions.id"], name=op.f("fk_deletions_admission_id_admissions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletions")),
        sa.UniqueConstraint("admission_id", name=op.f("uq_deletions_admission_id")),
        schema="cme",
    )
    op.create_index("ix_deletions_pupil", "deletions", ["la_code", "upn"], unique=False, schema="cme")
    op.create_index("ix_deletions_school", "deletions", ["urn", "id"], unique=False, schema="cme")
    op.create_table(
        "enquiries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("made_on", sa.Date(), nullable=False),
        sa.Column("party", sa.Text(), nullable=False),
        sa.Column("officer", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cme.cases.id"], name=op.f("fk_enquiries_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enquiries")),
        schema="cme",
    )
    op.create_index(op.f("ix_cme_enquiries_case_id"), "enquiries", ["case_id"], unique=False, schema="cme")
    create_platform_tables_v1("cme")


def downgrade() -> None:
    for table in ("idempotency_keys", "applied_events", "outbox"):
        op.drop_table(table, schema="cme")
    op.drop_index(op.f("ix_cme_enquiries_case_id"), table_name="enquiries", schema="cme")
    op.drop_table("enquiries", schema="cme")
    op.drop_index("ix_deletions_school", table_name="deletions", schema="cme")
    op.drop_index("ix_deletions_pupil", table_name="deletions", schema="cme")
    op.drop_table("deletions", schema="cme")
    op.drop_index(op.f("ix_cme_case_entries_case_id"), table_name="case_entries", schema="cme")
    op.drop_table("case_entries", schema="cme")
    op.drop_index(op.f("ix_cme_schools_la_code"), table_name="schools", schema="cme")
    op.drop_table("schools", schema="cme")
    op.drop_table("school_sessions", schema="cme")
    op.drop_index("ux_roll_matches_pair", table_name="roll_matches", schema="cme")
    op.drop_index(
        "ux_roll_matches_deletion",
        table_name="roll_matches",
        schema="cme",
        postgresql_where=sa.text("deletion_id IS NOT NULL"),
    )
    op.drop_index(op.f("ix_cme_roll_matches_upn"), table_name="roll_matches", schema="cme")
    op.drop_table("roll_matches", schema="cme")
    op.drop_index("ix_roll_amendments_entry", table_name="roll_amendments", schema="cme")
    op.drop_table("roll_amendments", schema="cme")
    op.drop_table("pupil_marks", schema="cme")
    op.drop_table("notification_policies", schema="cme")
    op.drop_index(
        "ux_notification_clocks_deletion",
        table_name="notification_clocks",
        schema="cme",
        postgresql_where=sa.text("deletion_id IS NOT NULL"),
    )
    op.drop_index(
        "ux_notification_clocks_admission",
        table_name="notification_clocks",
        schema="cme",
        postgresql_where=sa.text("admission_id IS NOT NULL"),
    )
    op.drop_index("ix_notification_clocks_school", table_name="notification_clocks", schema="cme")
    op.drop_index("ix_notification_clocks_open", table_name="notification_clocks", schema="cme")
    op.drop_table("notification_clocks", schema="cme")
    op.drop_index("ux_cases_open", table_name="cases", schema="cme", postgresql_where=sa.text("status = 'open'"))
    op.drop_index("ix_cases_register", table_name="cases", schema="cme")
    op.drop_table("cases", schema="cme")
    op.drop_index(
        "ux_admissions_on_roll", table_name="admissions", schema="cme", postgresql_where=sa.text("deleted_on IS NULL")
    )
    op.drop_index("ix_admissions_pupil", table_name="admissions", schema="cme")
    op.drop_table("admissions", schema="cme")
