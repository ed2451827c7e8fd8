"""ticket connector tables (outbox, seen webhook deliveries)

Revision ID: 0003_connectors
Revises: 0002_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_connectors"
down_revision: str | None = "0002_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("system", sa.String(length=50), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_outbox")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_connector_outbox_delivery_id")),
    )
    op.create_index(
        "ix_connector_outbox_ticket",
        "connector_outbox",
        ["system", "external_id", "delivered_at"],
    )
    op.create_index(
        "ix_connector_outbox_due", "connector_outbox", ["delivered_at", "next_attempt_at"]
    )
    op.create_table(
        "connector_webhook_deliveries",
        sa.Column("system", sa.String(length=50), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "system", "delivery_id", name=op.f("pk_connector_webhook_deliveries")
        ),
    )
    op.create_index(
        op.f("ix_connector_webhook_deliveries_received_at"),
        "connector_webhook_deliveries",
        ["received_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_connector_webhook_deliveries_received_at"),
        table_name="connector_webhook_deliveries",
    )
    op.drop_table("connector_webhook_deliveries")
    op.drop_index("ix_connector_outbox_due", table_name="connector_outbox")
    op.drop_index("ix_connector_outbox_ticket", table_name="connector_outbox")
    op.drop_table("connector_outbox")
