"""sandbox billing provider table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 08:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "sandbox_objects",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_objects")),
    )
    with op.batch_alter_table("sandbox_objects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sandbox_objects_kind"), ["kind"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("sandbox_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_objects_kind"))
    op.drop_table("sandbox_objects")
