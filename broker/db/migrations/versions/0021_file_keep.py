"""device_groups.keep_files: keep each transferred file, encrypted, for auditors

False keeps only the transfer's facts (name, size, both hashes); see docs/FILES.md.

Revision ID: 0021_file_keep
Revises: 0020_dual_control
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_file_keep"
down_revision: str | None = "0020_dual_control"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_groups", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("keep_files", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    # Drop in place: a batch rebuild of device_groups breaks the devices' foreign keys.
    with op.batch_alter_table("device_groups", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("keep_files")
