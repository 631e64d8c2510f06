"""worklist digest by email

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("digest", sa.Boolean(), server_default=sa.false(), nullable=False),
        schema="notifications",
    )
    op.add_column("subscriptions", sa.Column("last_digest_on", sa.Date(), nullable=True), schema="notifications")


def downgrade() -> None:
    op.drop_column("subscriptions", "last_digest_on", schema="notifications")
    op.drop_column("subscriptions", "digest", schema="notifications")
