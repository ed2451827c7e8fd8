"""audit_tree_nodes (stored subtree roots for O(log n) proofs) and audit_verifications

Applied after ``0015_helpdesks``: the file numbers are not the order (the chain of
``down_revision`` is), and revision ids stay as deployed databases store them.

``audit_tree_nodes`` keeps the root of every perfect subtree at levels 4, 8, 12, ... of the
log's Merkle tree (``audit.merkle.STRIDE``); existing logs are filled in here from their leaf
hashes, in log order. ``audit_verifications`` keeps the outcome of each whole-log
verification (background or on demand), so pages show the last one without re-verifying.

Revision ID: 0012_audit_tree
Revises: 0015_helpdesks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from audit.merkle import Frontier, Node
from audit.schema import node_key

revision: str = "0012_audit_tree"
down_revision: str | None = "0015_helpdesks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAGE = 50_000


def upgrade() -> None:
    nodes = op.create_table(
        "audit_tree_nodes",
        sa.Column(
            "node",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )
    op.create_table(
        "audit_verifications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("covered", sa.BigInteger(), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("record_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_verifications")),
    )
    op.create_index("ix_audit_verifications_started_at", "audit_verifications", ["started_at"])
    _fill(op.get_bind(), nodes)


def _fill(bind: sa.Connection, nodes: sa.Table) -> None:
    """Rebuild the stored subtrees of an existing log from its leaf hashes."""
    records = sa.table(
        "audit_records", sa.column("position", sa.BigInteger), sa.column("leaf_hash")
    )
    frontier = Frontier()
    while True:
        rows = bind.execute(
            sa.select(records.c.leaf_hash)
            .where(records.c.position >= frontier.size)
            .order_by(records.c.position)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        completed: list[Node] = []
        frontier.extend([bytes(r[0]) for r in rows], completed)
        if completed:
            op.bulk_insert(
                nodes, [{"node": node_key(lv, ix), "hash": h} for lv, ix, h in completed]
            )


def downgrade() -> None:
    op.drop_index("ix_audit_verifications_started_at", table_name="audit_verifications")
    op.drop_table("audit_verifications")
    op.drop_table("audit_tree_nodes")
