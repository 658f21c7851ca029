"""Buildings, their 3D representations, oblique-mesh tiles, underground structures (BIM models:
:mod:`cimtwin.spatial.bim`).

A building has one 2D footprint and any number of 3D representations (LOD1 extrusion, BIM
model, oblique mesh); the 3D Tiles engine reads them from here.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, county_key, geom

REPRESENTATION_KINDS = ("lod1", "bim", "oblique")


class Building(Base):
    __tablename__ = "building"
    __table_args__ = (
        CheckConstraint("height_m IS NULL OR height_m > 0", name="height_positive"),
        CheckConstraint("floors IS NULL OR floors >= 0", name="floors_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    building_code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(256))
    use: Mapped[str | None] = mapped_column(String(32), index=True)  # residential, office, ...
    height_m: Mapped[float | None] = mapped_column(Float)
    floors: Mapped[int | None] = mapped_column(Integer)
    underground_floors: Mapped[int] = mapped_column(Integer, default=0)
    base_elevation_m: Mapped[float | None] = mapped_column(Float)  # ground, 1985 datum
    floor_area_m2: Mapped[float | None] = mapped_column(Float)
    residents: Mapped[int | None] = mapped_column(Integer)
    build_year: Mapped[int | None] = mapped_column(Integer)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    parcel_code: Mapped[str | None] = mapped_column(String(32), index=True)
    county_code: Mapped[str] = county_key()
    footprint: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()


class BuildingRepresentation(Base):
    """One 3D form of a building: LOD1 solid, BIM model or oblique mesh (by reference)."""

    __tablename__ = "building_representation"
    __table_args__ = (CheckConstraint("kind IN ('lod1','bim','oblique')", name="kind"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    building_id: Mapped[int] = mapped_column(
        ForeignKey(f"{SCHEMA}.building.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    lod: Mapped[int | None] = mapped_column(Integer)
    uri: Mapped[str | None] = mapped_column(Text)  # model file / tileset, when not in geom
    geom: Mapped[object | None] = geom("GEOMETRYZ", nullable=True)  # PolyhedralSurfaceZ / TIN
    county_code: Mapped[str] = county_key()  # its building's
    batch_id: Mapped[int | None] = batch_fk()


class ObliqueMeshTile(Base):
    """One node of an oblique-photography tile pyramid (ContextCapture OSGB/OBJ)."""

    __tablename__ = "oblique_mesh_tile"
    __table_args__ = (
        Index("ix_oblique_mesh_tile_building_ids", "building_ids", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    tile_path: Mapped[str] = mapped_column(Text)  # relative to the dataset root
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.oblique_mesh_tile.id", ondelete="CASCADE"), index=True
    )
    level: Mapped[int] = mapped_column(Integer)  # level of detail, 0 = coarsest
    geometric_error: Mapped[float | None] = mapped_column(Float)
    format: Mapped[str] = mapped_column(String(8))  # osgb, obj
    vertex_count: Mapped[int | None] = mapped_column(Integer)
    texture_count: Mapped[int | None] = mapped_column(Integer)
    min_z: Mapped[float] = mapped_column(Float)
    max_z: Mapped[float] = mapped_column(Float)
    building_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.building.id", ondelete="SET NULL"), index=True
    )
    footprint: Mapped[object] = geom("POLYGON")  # 2D bounds in the storage CRS
    # where its mesh went: the 3D tileset (a folder of CIMTWIN_TILES_DIR) and its glb there
    tileset: Mapped[str | None] = mapped_column(String(64), index=True)
    content_uri: Mapped[str | None] = mapped_column(Text)
    triangle_count: Mapped[int | None] = mapped_column(Integer)
    texture_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # 单体化: the buildings whose footprints its mesh's triangles fall in (their feature ids)
    building_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    county_code: Mapped[str] = county_key()  # one per dataset: a pyramid stays on one node
    batch_id: Mapped[int | None] = batch_fk()


class UndergroundStructure(Base):
    """Metro tunnels and stations, passages, utility tunnels: a footprint with a depth range."""

    __tablename__ = "underground_structure"
    __table_args__ = (CheckConstraint("bottom_elevation_m < top_elevation_m", name="depth_range"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128))
    top_elevation_m: Mapped[float] = mapped_column(Float)
    bottom_elevation_m: Mapped[float] = mapped_column(Float)
    footprint: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()
