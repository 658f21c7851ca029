"""oblique photography: where each tile's mesh went

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

``oblique_mesh_tile`` (since 0001) gets the tileset it was written to, its glb's path there,
its triangle count and its textures' size, so SQL can answer which photo tiles cover a
parcel and where their meshes are. (Chained after 0005 on main; to be re-chained after the
BIM branch's 0006 when both land.)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "oblique_mesh_tile",
        sa.Column("tileset", sa.String(length=64), nullable=True),
        schema=SCHEMA,
    )
    op.add_column(
        "oblique_mesh_tile", sa.Column("content_uri", sa.Text(), nullable=True), schema=SCHEMA
    )
    op.add_column(
        "oblique_mesh_tile", sa.Column("triangle_count", sa.Integer(), nullable=True), schema=SCHEMA
    )
    op.add_column(
        "oblique_mesh_tile",
        sa.Column("texture_bytes", sa.BigInteger(), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_oblique_mesh_tile_tileset"),
        "oblique_mesh_tile",
        ["tileset"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_oblique_mesh_tile_tileset"), table_name="oblique_mesh_tile", schema=SCHEMA
    )
    for column in ("texture_bytes", "triangle_count", "content_uri", "tileset"):
        op.drop_column("oblique_mesh_tile", column, schema=SCHEMA)
