"""the old POSPal's customers and running trials: pospal1_imports, pospal1_trials (issue 26)

Revision ID: 0026_pospal1_imports
Revises: 0025_job_runs
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_pospal1_imports"
down_revision: str | None = "0025_job_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "pospal1_imports",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("old_id", sa.Integer(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("used_machine_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_pospal1_imports_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_pospal1_imports")),
    )
    op.create_table(
        "pospal1_trials",
        sa.Column("hardware_hash", sa.String(length=64), nullable=False),
        sa.Column("first_run_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hardware_hash", name=op.f("pk_pospal1_trials")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("pospal1_trials")
    op.drop_table("pospal1_imports")
