"""oversight: second-person approval (group policy, ticket priority and category, the state)

``device_groups`` gain the approval policy (required, optionally narrowed to ticket
priorities and categories); ``tickets`` keep the priority and category a request gave;
``sessions`` get the time they entered ``awaiting_approval``. Existing groups ask for no
second approval (``false``, empty lists), so nothing changes for them.

Revision ID: 0018_oversight
Revises: 0017_throttles
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_oversight"
down_revision: str | None = "0017_throttles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, no batch mode: on SQLite a batch rebuilds the table, and dropping a
    # table that other tables reference fails with foreign keys on; every column here has a
    # constant default or none, which SQLite's ALTER TABLE accepts.
    op.add_column(
        "device_groups",
        sa.Column(
            "approval_required", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column(
        "device_groups",
        sa.Column("approval_priorities", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    )
    op.add_column(
        "device_groups",
        sa.Column("approval_categories", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    )
    op.add_column("tickets", sa.Column("priority", sa.String(length=50), nullable=True))
    op.add_column("tickets", sa.Column("category", sa.String(length=100), nullable=True))
    op.add_column(
        "sessions", sa.Column("awaiting_approval_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ has it), for the same reason: no table rebuilt. None
    # of these columns is in an index or a constraint.
    op.drop_column("sessions", "awaiting_approval_at")
    op.drop_column("tickets", "category")
    op.drop_column("tickets", "priority")
    op.drop_column("device_groups", "approval_categories")
    op.drop_column("device_groups", "approval_priorities")
    op.drop_column("device_groups", "approval_required")
