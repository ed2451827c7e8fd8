"""replicas, replica_leases, sealed_keys: several brokers on one database (issue 20)

``replicas``: each running ``supportbroker serve`` with its heartbeat (presence of its
agent links expires with it). ``replica_leases``: the background jobs' single runner.
``sealed_keys``: fingerprints of the KEK, checkpoint key and SSH host key the first replica
started with; a replica with other keys refuses to start. See docs/DEPLOY.md.

Revision ID: 0031_replicas
Revises: 0025_timestamps
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031_replicas"
down_revision: str | None = "0025_timestamps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("peering_key", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replicas_heartbeat_at"), ["heartbeat_at"])
    op.create_table(
        "replica_leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_replica_leases")),
    )
    op.create_table(
        "sealed_keys",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sealed_keys")),
    )


def downgrade() -> None:
    op.drop_table("sealed_keys")
    op.drop_table("replica_leases")
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replicas_heartbeat_at"))
    op.drop_table("replicas")
