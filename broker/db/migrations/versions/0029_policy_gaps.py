"""tickets.dual_control, consent_requests.handoff_box: the gaps of issue 22

Applied after ``0024_siem``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

``tickets.dual_control``: two auditors for one ticket's recordings and plaintext, a
per-ticket switch beside the device group's ``dual_control_playback``.
``consent_requests.handoff_box``: a second approval's consent code, encrypted, for the
requesting technician's page. See docs/OVERSIGHT.md.

Revision ID: 0029_policy_gaps
Revises: 0024_siem
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_policy_gaps"
down_revision: str | None = "0024_siem"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("dual_control", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("consent_requests", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("handoff_box", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consent_requests", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("handoff_box")
    # Drop in place: a batch rebuild of tickets breaks the sessions' foreign keys.
    with op.batch_alter_table("tickets", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("dual_control")
