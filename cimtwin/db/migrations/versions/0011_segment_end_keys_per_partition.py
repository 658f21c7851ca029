"""pipelines: a pipe's end-node keys on each pair of partitions instead of the parents

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

The keys from ``pipeline_segment (batch_id, from_node_id)`` and ``(batch_id, to_node_id)`` to
``pipeline_node (batch_id, id)`` were keys of the partitioned parents. ``ATTACH PARTITION``
checks a parent's key with one join against the whole referenced table, so each pipelines
import read every network's nodes: 0.44 s with one network in the twin, 0.94 s with five.
The same keys now sit on each segment partition, towards the node partition of its batch
(``pipeline_network.SEGMENT_END_KEYS``): the same rule, as a pipe and its nodes are always
in one batch, checked against that batch's nodes only. Existing pairs are given the keys
here (each checked once, against its own nodes).
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
PART = f"{SCHEMA}_part"

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = f'"{SCHEMA}"'
#: (constraint, column): as ``pipeline_network.SEGMENT_END_KEYS`` at this revision
SEGMENT_END_KEYS = (
    ("fk_pipeline_segment_from_node", "from_node_id"),
    ("fk_pipeline_segment_to_node", "to_node_id"),
)


def segment_end_keys_sql(segments: str, nodes: str) -> str:
    adds = ", ".join(
        f"ADD CONSTRAINT {name} FOREIGN KEY (batch_id, {column}) "
        f"REFERENCES {nodes} (batch_id, id) ON DELETE CASCADE"
        for name, column in SEGMENT_END_KEYS
    )
    return f"ALTER TABLE {segments} {adds}"


def _batches() -> list[int]:
    """The batches with a segment partition and a node partition."""
    rows = (
        op.get_bind()
        .execute(
            text(
                "SELECT s.relname FROM pg_inherits i JOIN pg_class s ON s.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE n.nspname = :schema AND p.relname = 'pipeline_segment'"
            ),
            {"schema": SCHEMA},
        )
        .scalars()
    )
    out = []
    for name in rows:
        batch = int(name.rsplit("_b", 1)[1])
        node = (
            op.get_bind()
            .execute(text("SELECT to_regclass(:n)"), {"n": f'"{PART}".pipeline_node_b{batch}'})
            .scalar()
        )
        if node is not None:
            out.append(batch)
    return sorted(out)


def _pair(batch: int) -> tuple[str, str]:
    return f'"{PART}".pipeline_segment_b{batch}', f'"{PART}".pipeline_node_b{batch}'


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE {S}.pipeline_segment "
        + ", ".join(f"DROP CONSTRAINT {name}" for name, _ in SEGMENT_END_KEYS)
    )
    for batch in _batches():
        op.execute(segment_end_keys_sql(*_pair(batch)))


def downgrade() -> None:
    for batch in _batches():
        segments, _ = _pair(batch)
        op.execute(
            f"ALTER TABLE {segments} "
            + ", ".join(f"DROP CONSTRAINT IF EXISTS {name}" for name, _ in SEGMENT_END_KEYS)
        )
    for name, column in SEGMENT_END_KEYS:
        op.execute(
            f"""ALTER TABLE {S}.pipeline_segment ADD CONSTRAINT {name}
                  FOREIGN KEY (batch_id, {column})
                  REFERENCES {S}.pipeline_node (batch_id, id) ON DELETE CASCADE"""
        )
