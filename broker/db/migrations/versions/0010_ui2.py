"""ui: experts invited into a session by its technician

Revision ID: 0010_ui2
Revises: 0009_core
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_ui2"
down_revision: str | None = "0009_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_invitations",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("expert_id", sa.String(length=36), nullable=False),
        sa.Column("invited_by", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_invitations_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["expert_id"],
            ["users.id"],
            name=op.f("fk_session_invitations_expert_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["users.id"],
            name=op.f("fk_session_invitations_invited_by_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_invitations")),
        sa.UniqueConstraint(
            "session_id", "expert_id", name=op.f("uq_session_invitations_session_id")
        ),
    )
    op.create_index(
        op.f("ix_session_invitations_expert_id"),
        "session_invitations",
        ["expert_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_session_invitations_expert_id"), table_name="session_invitations")
    op.drop_table("session_invitations")
