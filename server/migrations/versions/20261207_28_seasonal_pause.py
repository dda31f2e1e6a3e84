"""seasonal pause: subscriptions.paused and pause_resumes_at (Stripe pause_collection, issue 26)

Revision ID: 0028_seasonal_pause
Revises: 0027_agent_versions
Create Date: 2026-12-07 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_seasonal_pause"
down_revision: str | None = "0027_agent_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("pause_resumes_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("pause_resumes_at")
        batch.drop_column("paused")
