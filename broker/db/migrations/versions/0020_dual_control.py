"""device_groups.dual_control_playback and playback_requests: two auditors for a recording

A group's policy may ask that replaying a recording of its sessions, or exporting their
ticket's plaintext, wait for a second auditor's approval; each request and its decision is
a row (the audit log seals the same steps).

Revision ID: 0020_dual_control
Revises: 0019_screens
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_dual_control"
down_revision: str | None = "0019_screens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "device_groups",
        sa.Column(
            "dual_control_playback", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.create_table(
        "playback_requests",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("ticket_ref", sa.String(length=300), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("requester_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("decided_by_id", sa.String(length=36), nullable=True),
        sa.Column("decision_reason", sa.String(length=500), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["requester_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_playback_requests_session_id", "playback_requests", ["session_id"], unique=False
    )
    op.create_index(
        "ix_playback_requests_ticket_ref", "playback_requests", ["ticket_ref"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_playback_requests_ticket_ref", table_name="playback_requests")
    op.drop_index("ix_playback_requests_session_id", table_name="playback_requests")
    op.drop_table("playback_requests")
    # Drop in place: a batch rebuild of device_groups breaks the devices' foreign keys.
    with op.batch_alter_table("device_groups", recreate="never") as batch_op:
        batch_op.drop_column("dual_control_playback")
