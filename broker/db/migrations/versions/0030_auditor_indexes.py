"""Indexes for the auditor's pages at 1 M events / 200 k sessions (issue 14)

The session search orders by ``requested_at, id`` (both descending) and pages before it
joins: each filter it offers (technician, device, provider, state) gets an index led by that
column and ending in ``requested_at, id``, so a page is read in order from the index (read
backwards), not sorted from a scan. The event-type search (``streams_with_event``) gets a
covering index on ``audit_records`` (type, time, stream): its subquery is answered from the
index alone.

Revision ID: 0030_auditor_indexes
Revises: 0031_replicas
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0030_auditor_indexes"
down_revision: str | None = "0031_replicas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_INDEXES = {
    "ix_sessions_requested": ["requested_at", "id"],
    "ix_sessions_technician_requested": ["technician_id", "requested_at", "id"],
    "ix_sessions_device_requested": ["device_id", "requested_at", "id"],
    "ix_sessions_provider_requested": ["provider", "requested_at", "id"],
    "ix_sessions_state_requested": ["state", "requested_at", "id"],
}


def upgrade() -> None:
    for name, columns in SESSION_INDEXES.items():
        op.create_index(name, "sessions", columns, unique=False)
    op.create_index(
        "ix_audit_records_type_time",
        "audit_records",
        ["event_type", "occurred_at_us", "stream"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_records_type_time", table_name="audit_records")
    for name in SESSION_INDEXES:
        op.drop_index(name, table_name="sessions")
