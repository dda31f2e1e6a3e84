"""binding that cannot be walked: the machine_fingerprints table (re-binds and clones)

Revision ID: 0013a_bind
Revises: 0017_offline
Create Date: 2026-11-30 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013a_bind"
down_revision: str | None = "0017_offline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "machine_fingerprints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_id", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("rebound_at", sa.DateTime(), nullable=True),
        sa.Column("clone_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_machine_fingerprints_machine_id_machines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_fingerprints")),
    )
    op.create_index(
        "ix_machine_fingerprints_machine_digest",
        "machine_fingerprints",
        ["machine_id", "digest"],
        unique=True,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_machine_fingerprints_machine_digest", table_name="machine_fingerprints")
    op.drop_table("machine_fingerprints")
