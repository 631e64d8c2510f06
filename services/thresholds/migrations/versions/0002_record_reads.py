"""who read which pupil's record

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from shared.migrations import create_record_reads_v1

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_record_reads_v1("thresholds")


def downgrade() -> None:
    op.drop_table("record_reads", schema="thresholds")
