"""capabilities: port forwarding gets its own right, ``forward``

Applied after ``0014_desktop``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

Until now a port forward to an agent's device rode on ``control`` (a VNC or RDP port was
taken for remote control). ``forward`` is its own capability now and the agent checks it,
so every agent session that carried ``control`` keeps what it could do: it gets ``forward``
too. Sessions of other providers never had port forwards and are left alone. Device
groups store no capabilities (their ``allowed_ports`` still say which ports): nothing to
map there. Downgrading gives ``forward`` back to ``control``.

Revision ID: 0013_capabilities
Revises: 0014_desktop
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_capabilities"
down_revision: str | None = "0014_desktop"  # merged before this one
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_sessions = sa.table(
    "sessions",
    sa.column("id", sa.String(36)),
    sa.column("provider", sa.String(30)),
    sa.column("capabilities", sa.JSON()),
)
BATCH = 500


def _rewrite(change: Callable[[set[str]], set[str]]) -> None:
    """Apply ``change`` to every agent session's capabilities (sorted, as the service
    stores them), writing only the rows it changes."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_sessions.c.id, _sessions.c.capabilities).where(_sessions.c.provider == "agent")
    ).all()
    updates = []
    for session_id, capabilities in rows:
        before = set(capabilities or [])
        after = change(set(before))
        if after != before:
            updates.append({"sid": session_id, "caps": sorted(after)})
    statement = (
        sa.update(_sessions)
        .where(_sessions.c.id == sa.bindparam("sid"))
        .values(capabilities=sa.bindparam("caps", type_=sa.JSON()))
    )
    for start in range(0, len(updates), BATCH):
        bind.execute(statement, updates[start : start + BATCH])


def _add_forward(caps: set[str]) -> set[str]:
    return caps | {"forward"} if "control" in caps else caps


def _back_to_control(caps: set[str]) -> set[str]:
    return (caps - {"forward"}) | {"control"} if "forward" in caps else caps


def upgrade() -> None:
    _rewrite(_add_forward)


def downgrade() -> None:
    _rewrite(_back_to_control)
