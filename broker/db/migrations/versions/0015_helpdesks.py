"""help desks as they ship: refused webhooks kept, ticket watch, outbox markers, sweeps

Applied after ``0013_capabilities``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

``connector_webhook_rejects`` keeps refused inbound deliveries for the admin;
``connector_ticket_watch`` the slow poll of tickets with running sessions;
``connector_outbox.marker`` the stable (session, step) reference each comment carries (one
per ticket); ``connector_webhook_deliveries.keep_until`` how long a delivery id is remembered;
``tickets.group_name`` the ticket's group in its system; ``provider_device_sweeps`` how far
the device-wide sweep has read each managed device.

Revision ID: 0015_helpdesks
Revises: 0014_desktop
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_helpdesks"
down_revision: str | None = "0013_capabilities"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_webhook_rejects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("system", sa.String(length=50), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=50), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_size", sa.Integer(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_webhook_rejects")),
    )
    op.create_index(
        "ix_connector_webhook_rejects_system", "connector_webhook_rejects", ["system", "id"]
    )
    op.create_table(
        "connector_ticket_watch",
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_connector_ticket_watch_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_connector_ticket_watch")),
    )
    op.create_table(
        "provider_device_sweeps",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("swept_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_provider_device_sweeps_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_provider_device_sweeps")),
    )
    with op.batch_alter_table("connector_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("marker", sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_connector_outbox_system"), ["system", "external_id", "marker"]
        )
    with op.batch_alter_table("connector_webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keep_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_connector_webhook_deliveries_keep_until"), ["keep_until"], unique=False
        )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # Rows elsewhere point at tickets: a recreated table could not be dropped with foreign
    # keys on. SQLite (3.35+) and PostgreSQL both drop a plain column in place.
    with op.batch_alter_table("tickets", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("group_name")
    with op.batch_alter_table("connector_webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connector_webhook_deliveries_keep_until"))
        batch_op.drop_column("keep_until")
    with op.batch_alter_table("connector_outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_connector_outbox_system"), type_="unique")
        batch_op.drop_column("marker")
    op.drop_table("provider_device_sweeps")
    op.drop_table("connector_ticket_watch")
    op.drop_index("ix_connector_webhook_rejects_system", table_name="connector_webhook_rejects")
    op.drop_table("connector_webhook_rejects")
