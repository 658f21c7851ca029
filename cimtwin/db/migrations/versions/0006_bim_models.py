"""bim: IFC models, their storeys, spaces (rooms) and elements

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

``bim_model`` records one imported IFC model and how it was georeferenced (path, CRS,
parameters) and which building it belongs to; ``bim_storey`` and ``bim_space`` are the indoor
tables (rooms with a floor plan and floor/ceiling heights); ``bim_element`` (from 0001) gains
the model link, the type name, quantities, a material colour and a 2D footprint. Columns are
described in :mod:`cimtwin.spatial.bim`.
"""

from collections.abc import Sequence

import geoalchemy2  # noqa: F401
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
SRID = get_settings().storage_srid

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_geospatial_table(
        "bim_model",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.Column("ifc_schema", sa.String(length=16), nullable=False),
        sa.Column("georef_path", sa.String(length=32), nullable=False),
        sa.Column("map_crs", sa.Text(), nullable=True),
        sa.Column(
            "georef",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("building_id", sa.BigInteger(), nullable=True),
        sa.Column("building_link", sa.String(length=16), nullable=True),
        sa.Column("element_count", sa.Integer(), nullable=False),
        sa.Column("min_z", sa.Float(), nullable=True),
        sa.Column("max_z", sa.Float(), nullable=True),
        sa.Column(
            "footprint",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            [f"{SCHEMA}.import_batch.id"],
            name=op.f("fk_bim_model_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["building_id"],
            [f"{SCHEMA}.building.id"],
            name=op.f("fk_bim_model_building_id_building"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bim_model")),
        sa.UniqueConstraint("dataset", name=op.f("uq_bim_model_dataset")),
        schema=SCHEMA,
    )
    op.create_geospatial_index(
        "idx_bim_model_footprint",
        "bim_model",
        ["footprint"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_bim_model_batch_id"), "bim_model", ["batch_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_model_building_id"), "bim_model", ["building_id"], unique=False, schema=SCHEMA
    )
    op.create_index(op.f("ix_bim_model_name"), "bim_model", ["name"], unique=False, schema=SCHEMA)
    op.create_table(
        "bim_storey",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("ifc_guid", sa.String(length=22), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("elevation_m", sa.Float(), nullable=True),
        sa.Column("height_m", sa.Float(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            [f"{SCHEMA}.import_batch.id"],
            name=op.f("fk_bim_storey_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            [f"{SCHEMA}.bim_model.id"],
            name=op.f("fk_bim_storey_model_id_bim_model"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bim_storey")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_bim_storey_batch_id"), "bim_storey", ["batch_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_storey_model_id"), "bim_storey", ["model_id"], unique=False, schema=SCHEMA
    )
    op.create_geospatial_table(
        "bim_space",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("storey_id", sa.BigInteger(), nullable=True),
        sa.Column("storey", sa.String(length=128), nullable=True),
        sa.Column("ifc_guid", sa.String(length=22), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("long_name", sa.Text(), nullable=True),
        sa.Column("usage", sa.Text(), nullable=True),
        sa.Column("area_m2", sa.Float(), nullable=True),
        sa.Column("area_source", sa.String(length=64), nullable=True),
        sa.Column("volume_m3", sa.Float(), nullable=True),
        sa.Column("floor_elevation_m", sa.Float(), nullable=True),
        sa.Column("ceiling_elevation_m", sa.Float(), nullable=True),
        sa.Column(
            "footprint",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            [f"{SCHEMA}.import_batch.id"],
            name=op.f("fk_bim_space_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            [f"{SCHEMA}.bim_model.id"],
            name=op.f("fk_bim_space_model_id_bim_model"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["storey_id"],
            [f"{SCHEMA}.bim_storey.id"],
            name=op.f("fk_bim_space_storey_id_bim_storey"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bim_space")),
        schema=SCHEMA,
    )
    op.create_geospatial_index(
        "idx_bim_space_footprint",
        "bim_space",
        ["footprint"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_bim_space_batch_id"), "bim_space", ["batch_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_space_ifc_guid"), "bim_space", ["ifc_guid"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_space_model_id"), "bim_space", ["model_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_space_storey"), "bim_space", ["storey"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_space_storey_id"), "bim_space", ["storey_id"], unique=False, schema=SCHEMA
    )
    op.add_column(
        "bim_element", sa.Column("model_id", sa.BigInteger(), nullable=True), schema=SCHEMA
    )
    op.add_column("bim_element", sa.Column("ifc_type", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column(
        "bim_element",
        sa.Column(
            "quantities",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        schema=SCHEMA,
    )
    op.add_column(
        "bim_element",
        sa.Column("material_color", sa.String(length=9), nullable=True),
        schema=SCHEMA,
    )
    op.add_geospatial_column(
        "bim_element",
        sa.Column(
            "footprint",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=SRID,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        schema=SCHEMA,
    )
    op.create_geospatial_index(
        "idx_bim_element_footprint",
        "bim_element",
        ["footprint"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_bim_element_ifc_guid"), "bim_element", ["ifc_guid"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f("ix_bim_element_model_id"), "bim_element", ["model_id"], unique=False, schema=SCHEMA
    )
    op.create_foreign_key(
        op.f("fk_bim_element_model_id_bim_model"),
        "bim_element",
        "bim_model",
        ["model_id"],
        ["id"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_bim_element_model_id_bim_model"), "bim_element", schema=SCHEMA, type_="foreignkey"
    )
    op.drop_index(op.f("ix_bim_element_model_id"), table_name="bim_element", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_element_ifc_guid"), table_name="bim_element", schema=SCHEMA)
    op.drop_geospatial_index(
        "idx_bim_element_footprint",
        table_name="bim_element",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="footprint",
    )
    op.drop_geospatial_column("bim_element", "footprint", schema=SCHEMA)
    op.drop_column("bim_element", "material_color", schema=SCHEMA)
    op.drop_column("bim_element", "quantities", schema=SCHEMA)
    op.drop_column("bim_element", "ifc_type", schema=SCHEMA)
    op.drop_column("bim_element", "model_id", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_space_storey_id"), table_name="bim_space", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_space_storey"), table_name="bim_space", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_space_model_id"), table_name="bim_space", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_space_ifc_guid"), table_name="bim_space", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_space_batch_id"), table_name="bim_space", schema=SCHEMA)
    op.drop_geospatial_index(
        "idx_bim_space_footprint",
        table_name="bim_space",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="footprint",
    )
    op.drop_geospatial_table("bim_space", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_storey_model_id"), table_name="bim_storey", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_storey_batch_id"), table_name="bim_storey", schema=SCHEMA)
    op.drop_table("bim_storey", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_model_name"), table_name="bim_model", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_model_building_id"), table_name="bim_model", schema=SCHEMA)
    op.drop_index(op.f("ix_bim_model_batch_id"), table_name="bim_model", schema=SCHEMA)
    op.drop_geospatial_index(
        "idx_bim_model_footprint",
        table_name="bim_model",
        schema=SCHEMA,
        postgresql_using="gist",
        column_name="footprint",
    )
    op.drop_geospatial_table("bim_model", schema=SCHEMA)
