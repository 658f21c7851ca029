"""terrain: DEMs in the storage CRS, stored in blocks

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``terrain_dem`` holds one imported DEM (grid, nodata, extent, provenance) and
``terrain_dem_block`` its cells, 64 x 64 per row as zlib-compressed float32 (bytea rather
than PostGIS raster: ``postgis_raster`` is not an extension the twin creates). Both extents
are GiST-indexed so a 3D tile reads only the blocks under it.
"""

from collections.abc import Sequence

import geoalchemy2  # noqa: F401
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
SRID = get_settings().storage_srid

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_geospatial_table(
        "terrain_dem",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.Column("source_crs", sa.Text(), nullable=False),
        sa.Column("vertical_datum", sa.String(length=64), nullable=False),
        sa.Column("origin_x", sa.Float(), nullable=False),
        sa.Column("origin_y", sa.Float(), nullable=False),
        sa.Column("cell_x", sa.Float(), nullable=False),
        sa.Column("cell_y", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("leaf_stride", sa.Integer(), nullable=False),
        sa.Column("leaf_error_m", sa.Float(), nullable=False),
        sa.Column("nodata", sa.Float(), nullable=True),
        sa.Column("min_height_m", sa.Float(), nullable=False),
        sa.Column("max_height_m", sa.Float(), nullable=False),
        sa.Column(
            "extent",
            Geometry(
                geometry_type="POLYGON",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            [f"{SCHEMA}.import_batch.id"],
            name=op.f("fk_terrain_dem_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terrain_dem")),
        sa.UniqueConstraint("dataset", name=op.f("uq_terrain_dem_dataset")),
        schema=SCHEMA,
    )
    op.create_geospatial_index(
        "idx_terrain_dem_extent",
        "terrain_dem",
        ["extent"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_terrain_dem_batch_id"), "terrain_dem", ["batch_id"], unique=False, schema=SCHEMA
    )
    op.create_geospatial_table(
        "terrain_dem_block",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dem_id", sa.BigInteger(), nullable=False),
        sa.Column("block_row", sa.Integer(), nullable=False),
        sa.Column("block_col", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("cols", sa.Integer(), nullable=False),
        sa.Column("min_height_m", sa.Float(), nullable=False),
        sa.Column("max_height_m", sa.Float(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "extent",
            Geometry(
                geometry_type="POLYGON",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column(
            "anchor",
            Geometry(
                geometry_type="POINT",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            [f"{SCHEMA}.import_batch.id"],
            name=op.f("fk_terrain_dem_block_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dem_id"],
            [f"{SCHEMA}.terrain_dem.id"],
            name=op.f("fk_terrain_dem_block_dem_id_terrain_dem"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terrain_dem_block")),
        sa.UniqueConstraint(
            "dem_id",
            "block_row",
            "block_col",
            name=op.f("uq_terrain_dem_block_dem_id_block_row_block_col"),
        ),
        schema=SCHEMA,
    )
    op.create_geospatial_index(
        "idx_terrain_dem_block_anchor",
        "terrain_dem_block",
        ["anchor"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_geospatial_index(
        "idx_terrain_dem_block_extent",
        "terrain_dem_block",
        ["extent"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_terrain_dem_block_batch_id"),
        "terrain_dem_block",
        ["batch_id"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_terrain_dem_block_dem_id"),
        "terrain_dem_block",
        ["dem_id"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_terrain_dem_block_dem_id"), table_name="terrain_dem_block", schema=SCHEMA
    )
    op.drop_index(
        op.f("ix_terrain_dem_block_batch_id"), table_name="terrain_dem_block", schema=SCHEMA
    )
    op.drop_geospatial_index(
        "idx_terrain_dem_block_extent",
        table_name="terrain_dem_block",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="extent",
    )
    op.drop_geospatial_index(
        "idx_terrain_dem_block_anchor",
        table_name="terrain_dem_block",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="anchor",
    )
    op.drop_geospatial_table("terrain_dem_block", schema=SCHEMA)
    op.drop_index(op.f("ix_terrain_dem_batch_id"), table_name="terrain_dem", schema=SCHEMA)
    op.drop_geospatial_index(
        "idx_terrain_dem_extent",
        table_name="terrain_dem",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="extent",
    )
    op.drop_geospatial_table("terrain_dem", schema=SCHEMA)
