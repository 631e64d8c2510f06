"""who read which pupil's record

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from shared.migrations import create_record_reads_v1

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_record_reads_v1("notifications")


def downgrade() -> None:
    op.drop_table("record_reads", schema="notifications")
