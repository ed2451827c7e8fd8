"""audit_timestamps: RFC 3161 tokens of published checkpoints

One row per timestamped checkpoint (its size), holding the DER TimeStampResp; see
docs/AUDIT.md, "Timestamps".

Revision ID: 0025_timestamps
Revises: 0023_history
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_timestamps"
down_revision: str | None = "0023_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_timestamps",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("gen_time_us", sa.BigInteger(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )


def downgrade() -> None:
    op.drop_table("audit_timestamps")
