"""devices.agent_version and devices.retired_at: the inventory's columns

The agent reports its version in the hello it sends when its link opens; the broker keeps the
last one it heard. A retired device stays (its sessions' audit trail names it) but is hidden
from pickers, refused for new sessions, and its agent key is revoked.

Revision ID: 0019_screens
Revises: 0018_oversight
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_screens"
down_revision: str | None = "0018_oversight"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_version", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Drop in place: a batch rebuild of devices would break the foreign keys pointing at it.
    with op.batch_alter_table("devices", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("retired_at")
        batch_op.drop_column("agent_version")
