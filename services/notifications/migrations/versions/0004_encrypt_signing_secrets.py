"""webhook signing secrets encrypted at rest

Revision ID: 0004
Revises: 0003

Encrypts the secrets stored in clear under SECRETS_KEY (read from the environment, as the services
read it); downgrading decrypts them again.
"""

import sqlalchemy as sa
from alembic import op

from shared.encryption import secret_box
from shared.settings import PlatformSettings
from shared.webhooks import SECRET_PREFIX

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

subscriptions = sa.table(
    "subscriptions",
    sa.column("id", sa.BigInteger),
    sa.column("secret", sa.Text),
    sa.column("previous_secret", sa.Text),
    schema="notifications",
)


def _convert(change) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(subscriptions).where(subscriptions.c.secret.is_not(None)).with_for_update()
    ).all()
    for row in rows:
        connection.execute(
            subscriptions.update()
            .where(subscriptions.c.id == row.id)
            .values(secret=change(row.secret), previous_secret=change(row.previous_secret))
        )


def upgrade() -> None:
    box = secret_box(PlatformSettings().secrets_key)
    # Only clear secrets (they carry the Standard Webhooks prefix): a rerun changes nothing.
    _convert(lambda secret: box.encrypt(secret) if secret and secret.startswith(SECRET_PREFIX) else secret)


def downgrade() -> None:
    box = secret_box(PlatformSettings().secrets_key)
    _convert(lambda secret: box.decrypt(secret) if secret and not secret.startswith(SECRET_PREFIX) else secret)
