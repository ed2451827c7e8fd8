"""owner_notices: mail owed to a device owner after an unattended session, until delivered

Applied after ``0029_policy_gaps``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

The end user's history link needs no table (its token is an HMAC of the consent request's
id); this adds only the outbox of owner notices (broker.notices).

Revision ID: 0023_history
Revises: 0029_policy_gaps
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_history"
down_revision: str | None = "0029_policy_gaps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "owner_notices",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("ticket_ref", sa.String(length=300), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_owner_notices_session_id", "owner_notices", ["session_id"], unique=False)
    op.create_index(
        "ix_owner_notices_due", "owner_notices", ["sent_at", "next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_owner_notices_due", table_name="owner_notices")
    op.drop_index("ix_owner_notices_session_id", table_name="owner_notices")
    op.drop_table("owner_notices")
