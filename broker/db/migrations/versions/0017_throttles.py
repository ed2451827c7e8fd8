"""throttles that slow guessing without locking the owner out; refusals tallied per minute

``consent_requests.paused_until``: code entry for one request waits (growing back-off)
instead of the request being locked; ``login_throttle.username``: the account a counter row
belongs to (an admin's unlock clears them all); ``login_known_sources``: the addresses an
account signed in from, which the account-wide guard lets through; ``refusal_tallies``: 429s
counted per source and minute, sealed as one audit record when the minute is over.

Revision ID: 0017_throttles
Revises: 0016_files
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_throttles"
down_revision: str | None = "0016_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consent_requests") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("login_throttle") as batch:
        batch.add_column(sa.Column("username", sa.String(length=64), nullable=True))
    op.create_table(
        "login_known_sources",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", "source", name=op.f("pk_login_known_sources")),
    )
    op.create_table(
        "refusal_tallies",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "source", name=op.f("pk_refusal_tallies")),
    )


def downgrade() -> None:
    op.drop_table("refusal_tallies")
    op.drop_table("login_known_sources")
    # Drop in place: a batch rebuild would break the foreign keys that point at these tables.
    with op.batch_alter_table("login_throttle", recreate="never") as batch:
        batch.drop_column("username")
    with op.batch_alter_table("consent_requests", recreate="never") as batch:
        batch.drop_column("paused_until")
