"""refused token requests, counted for the rate limit

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_failures",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_failures")),
        schema="registers",
    )
    op.create_index("ix_token_failures_client", "token_failures", ["client_id", "at"], schema="registers")
    op.create_index("ix_token_failures_address", "token_failures", ["address", "at"], schema="registers")
    op.create_index("ix_token_failures_at", "token_failures", ["at"], schema="registers")


def downgrade() -> None:
    op.drop_table("token_failures", schema="registers")
