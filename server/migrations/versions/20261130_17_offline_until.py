"""activation by file: machines.offline_until (the end of a machine's offline license)

Revision ID: 0017_offline
Revises: 0013b
Create Date: 2026-11-30 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_offline"
down_revision: str | None = "0013b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("offline_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("offline_until")
