"""audit_records: no event-type and time indexes; on SQLite the position is the rowid

Both indexes served no query and cost a B-tree insert per record; an ``INTEGER`` primary key
on SQLite is the table's rowid (a ``BIGINT`` one is a separate unique index). PostgreSQL keeps
``BIGINT``. On SQLite the table is rebuilt (a copy of the records, once).

Revision ID: 0011_audit_perf
Revises: 0010_ui2
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_audit_perf"
down_revision: str | None = "0010_ui2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_records_occurred_at_us")
        batch_op.drop_index("ix_audit_records_event_type")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("audit_records", schema=None, recreate="always") as batch_op:
            batch_op.alter_column(
                "position",
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=False,
                autoincrement=False,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("audit_records", schema=None, recreate="always") as batch_op:
            batch_op.alter_column(
                "position",
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=False,
                autoincrement=False,
            )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index("ix_audit_records_event_type", ["event_type"], unique=False)
        batch_op.create_index("ix_audit_records_occurred_at_us", ["occurred_at_us"], unique=False)
