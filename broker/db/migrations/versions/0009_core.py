"""core: web sessions no longer store their CSRF token (it is derived from the cookie)

Revision ID: 0009_core
Revises: 0008_ui

The CSRF token is now an HMAC of the cookie secret under the server key
(``broker.auth.secrets.csrf_token_for``), so it is never written to the database, where SQL
parameter logging at DEBUG level could show it. Browsers logged in before the upgrade keep
their session; their pages pick up the derived token on the next load.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_core"
down_revision: str | None = "0008_ui"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("csrf_token")


def downgrade() -> None:
    # The old code compared against this column: sessions from the new code cannot be
    # restored, so an empty value makes their writes fail CSRF until the user logs in again.
    with op.batch_alter_table("web_sessions") as batch:
        batch.add_column(
            sa.Column("csrf_token", sa.String(length=64), nullable=False, server_default="")
        )
