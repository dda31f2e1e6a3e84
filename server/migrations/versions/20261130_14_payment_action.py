"""3-D Secure renewals: subscriptions.payment_action_url

Revision ID: 0014_sca
Revises: 0013a_bind
Create Date: 2026-11-30 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_sca"
down_revision: str | None = "0013a_bind"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_action_url", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("payment_action_url")
