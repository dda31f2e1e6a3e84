"""the trusted key-set version each terminal holds: agent_versions.keyset_version (issue 24 item 6)

Revision ID: 0029_agent_keyset_version
Revises: 0028_seasonal_pause
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_agent_keyset_version"
down_revision: str | None = "0028_seasonal_pause"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("agent_versions") as batch:
        batch.add_column(sa.Column("keyset_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("agent_versions") as batch:
        batch.drop_column("keyset_version")
