"""oversight: second-person approval (group policy, ticket priority and category, the state)

``device_groups`` gain the approval policy (required, optionally narrowed to ticket
priorities and categories); ``tickets`` keep the priority and category a request gave;
``sessions`` get the time they entered ``awaiting_approval``. Existing groups ask for no
second approval (``false``, empty lists), so nothing changes for them.

Revision ID: 0018_oversight
Revises: 0012_audit_tree
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_oversight"
down_revision: str | None = "0012_audit_tree"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_groups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "approval_required", sa.Boolean(), server_default=sa.text("false"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "approval_priorities", sa.JSON(), server_default=sa.text("'[]'"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "approval_categories", sa.JSON(), server_default=sa.text("'[]'"), nullable=False
            )
        )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("category", sa.String(length=100), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("awaiting_approval_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("awaiting_approval_at")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("category")
        batch_op.drop_column("priority")
    with op.batch_alter_table("device_groups", schema=None) as batch_op:
        batch_op.drop_column("approval_categories")
        batch_op.drop_column("approval_priorities")
        batch_op.drop_column("approval_required")
