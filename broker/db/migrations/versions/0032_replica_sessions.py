"""sessions.served_by: the replica whose agent link holds a running session (issue 20)

A session approved on a device is served (recorded, its rights enforced) by the replica
holding the device's agent link; that replica claims it here. When the replica dies, the
agent redials another one at once (``agent_keys.connected_node`` moves with it), so this is
how the replica that takes over finds the dead one's sessions to fail and whose recordings
to close with a gap record (``broker.replicas.takeover``; docs/DEPLOY.md).

Revision ID: 0032_replica_sessions
Revises: 0030_auditor_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_replica_sessions"
down_revision: str | None = "0030_auditor_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("served_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("served_by")
