"""device_groups.max_file_bytes: the largest file a transfer through the broker may move

Applied after ``0012_audit_tree``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

NULL keeps the broker's default (``SUPPORTBROKER_FILES_MAX_BYTES``); see docs/FILES.md.

Revision ID: 0016_files
Revises: 0012_audit_tree
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_files"
down_revision: str | None = "0012_audit_tree"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_file_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # Drop in place: a batch rebuild of device_groups breaks the devices' foreign keys.
    with op.batch_alter_table("device_groups", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("max_file_bytes")
