"""owner authority and seats: the owner_proofs table and machines.seat_state

Revision ID: 0013b
Revises: 0003
Create Date: 2026-11-30 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013b"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "owner_proofs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_key", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("proven_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_owner_proofs_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owner_proofs")),
    )
    op.create_index(op.f("ix_owner_proofs_machine_key"), "owner_proofs", ["machine_key"], unique=False)
    op.create_index(op.f("ix_owner_proofs_customer_id"), "owner_proofs", ["customer_id"], unique=False)
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seat_state", sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("seat_state")
    op.drop_index(op.f("ix_owner_proofs_customer_id"), table_name="owner_proofs")
    op.drop_index(op.f("ix_owner_proofs_machine_key"), table_name="owner_proofs")
    op.drop_table("owner_proofs")
