"""oblique photography: the buildings each photo tile's mesh carries (单体化)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

``oblique_mesh_tile.building_ids``: the ids of the buildings whose footprints the tile's
triangles fall in, the feature ids baked into its glb. A GIN index answers "which photo
tiles show building N" (``building_ids @> ARRAY[N]``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "oblique_mesh_tile",
        sa.Column("building_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_oblique_mesh_tile_building_ids",
        "oblique_mesh_tile",
        ["building_ids"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_oblique_mesh_tile_building_ids", table_name="oblique_mesh_tile", schema=SCHEMA
    )
    op.drop_column("oblique_mesh_tile", "building_ids", schema=SCHEMA)
