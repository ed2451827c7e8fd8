"""siem_cursors: each SIEM target's acknowledged position in the audit log

Applied after ``0021_file_keep``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

See docs/SIEM.md.

Revision ID: 0024_siem
Revises: 0021_file_keep
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_siem"
down_revision: str | None = "0021_file_keep"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "siem_cursors",
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_siem_cursors")),
    )


def downgrade() -> None:
    op.drop_table("siem_cursors")
