"""devices.unavailable: the rights a device's agent said it cannot give, and why

Applied after ``0011_audit_perf``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

The agent reports them in its hello (the screen on Wayland, with no display, on macOS or
Windows; a shell on Windows); the request gate refuses them with that reason.

Revision ID: 0014_desktop
Revises: 0011_audit_perf
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_desktop"
down_revision: str | None = "0011_audit_perf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unavailable", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("unavailable")
