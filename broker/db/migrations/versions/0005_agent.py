"""built-in agent: enrollment tokens and agent keys

Revision ID: 0005_agent
Revises: 0004_providers
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_agent"
down_revision: str | None = "0004_providers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_enrollment_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_device_id", sa.String(length=36), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["device_groups.id"],
            name=op.f("fk_agent_enrollment_tokens_group_id_device_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["used_by_device_id"],
            ["devices.id"],
            name=op.f("fk_agent_enrollment_tokens_used_by_device_id_devices"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_enrollment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agent_enrollment_tokens_token_hash")),
    )
    with op.batch_alter_table("agent_enrollment_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_enrollment_tokens_group_id"), ["group_id"], unique=False
        )
    op.create_table(
        "agent_keys",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("public_key", sa.String(length=1000), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connected_node", sa.String(length=200), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("peer_address", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_agent_keys_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_agent_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_agent_keys_fingerprint")),
    )


def downgrade() -> None:
    op.drop_table("agent_keys")
    with op.batch_alter_table("agent_enrollment_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_enrollment_tokens_group_id"))
    op.drop_table("agent_enrollment_tokens")
