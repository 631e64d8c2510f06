"""who read which pupil's record

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from shared.migrations import create_record_reads_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_record_reads_v1("registers")


def downgrade() -> None:
    op.drop_table("record_reads", schema="registers")
