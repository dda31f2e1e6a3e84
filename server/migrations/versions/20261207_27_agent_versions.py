"""the agent version each terminal runs, and its last rolled-back update: agent_versions (issue 24)

Revision ID: 0027_agent_versions
Revises: 0026_pospal1_imports
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_agent_versions"
down_revision: str | None = "0026_pospal1_imports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "agent_versions",
        sa.Column("machine_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("update_failed", sa.String(length=200), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_agent_versions")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("agent_versions")
