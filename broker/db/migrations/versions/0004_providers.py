"""remote-access provider tables

Revision ID: 0004_providers
Revises: 0003_connectors
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_providers"
down_revision: str | None = "0003_connectors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_session_links",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("handle", sa.String(length=200), nullable=True),
        sa.Column("launch_url", sa.String(length=2000), nullable=True),
        sa.Column("launch_uri", sa.String(length=500), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_pending", sa.Boolean(), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_provider_session_links_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_provider_session_links")),
    )
    op.create_table(
        "provider_event_marks",
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("verdict", sa.String(length=30), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_provider_event_marks_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_provider_event_marks_session_id_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_event_marks")),
        sa.UniqueConstraint("provider", "event_key", name=op.f("uq_provider_event_marks_provider")),
    )
    op.create_index(
        op.f("ix_provider_event_marks_device_id"), "provider_event_marks", ["device_id"]
    )
    op.create_index(
        op.f("ix_provider_event_marks_session_id"), "provider_event_marks", ["session_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_event_marks_session_id"), table_name="provider_event_marks")
    op.drop_index(op.f("ix_provider_event_marks_device_id"), table_name="provider_event_marks")
    op.drop_table("provider_event_marks")
    op.drop_table("provider_session_links")
