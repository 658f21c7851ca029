"""BIM models imported from IFC (``cimtwin import ifc``): the model, its storeys, its spaces
(rooms) and every element, all in the storage CRS with 1985 heights.

What the 3D Tiles source and the indoor API read:

``bim_model``: one row per imported model (dataset = the replace key).
    ``name`` (the file's name unless ``--dataset``), ``source_file``, ``ifc_schema``
    (IFC2X3, IFC4, IFC4X3...), ``georef_path`` (``IfcMapConversion``,
    ``IfcMapConversionScaled``, ``ePSet_MapConversion``, ``IfcSite``, ``origin``),
    ``map_crs`` (the CRS the conversion targets, as given or as EPSG label),
    ``georef`` (JSONB: every parameter used: eastings, northings, height, rotation,
    scale, units, height datum and how heights became 1985 heights, notes),
    ``building_id`` (the linked ``building``), ``building_link`` (``given``, ``overlap``,
    ``created``), ``element_count``, ``min_z`` / ``max_z`` (1985 m), ``footprint``
    (MULTIPOLYGON, the union of the elements' footprints).
``bim_storey``: ``model_id``, ``ifc_guid``, ``name``, ``elevation_m`` (1985 height of the
    storey's placement), ``height_m`` (to the next storey up; the last one: to the top of
    its elements), ``position`` (0 = lowest).
``bim_space``: one room: ``model_id``, ``storey_id``, ``storey`` (the storey's name, for
    filters such as OGC API Features ``?storey=``), ``ifc_guid``, ``name`` (IFC Name,
    usually the room number), ``long_name``, ``usage`` (ObjectType, else
    Pset_SpaceCommon.Category / OccupancyType), ``area_m2`` / ``volume_m3`` (the file's
    standard quantities NetFloorArea / GrossFloorArea, NetVolume / GrossVolume, else computed
    from the geometry: the floor plan's area, IfcOpenShell's footprint area; ``area_source``
    says which), ``floor_elevation_m`` /
    ``ceiling_elevation_m`` (1985, bottom and top of the space's solid), ``footprint``
    (MULTIPOLYGON: its floor plan).
``bim_element``: one IFC product with geometry: ``model_id``, ``model`` (the model's name),
    ``building_id``, ``ifc_guid``, ``ifc_class``, ``name``, ``ifc_type`` (its type object's
    name, else ObjectType), ``storey`` / ``storey_elevation_m``, ``properties`` (JSONB
    ``{pset: {prop: value}}``, property sets only), ``quantities`` (JSONB, quantity sets),
    ``material_color`` (``#rrggbb`` or ``#rrggbbaa`` with transparency: the colour of most
    of its faces), ``geom`` (TIN Z: its triangles, storage CRS, 1985 heights, float64 from
    the model), ``footprint`` (MULTIPOLYGON, its triangles projected; NULL when it has no
    horizontal extent).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, county_key, json_object
from cimtwin.spatial.base import geom as geometry_column

GEOREF_PATHS = (
    "IfcMapConversion",
    "IfcMapConversionScaled",
    "ePSet_MapConversion",
    "IfcSite",
    "origin",
)


def _model_fk() -> Mapped[int]:
    return mapped_column(
        ForeignKey(f"{SCHEMA}.bim_model.id", ondelete="CASCADE"), index=True, nullable=False
    )


class BimModel(Base):
    """One imported IFC model and how it was placed."""

    __tablename__ = "bim_model"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    source_file: Mapped[str] = mapped_column(Text)
    ifc_schema: Mapped[str] = mapped_column(String(16))
    georef_path: Mapped[str] = mapped_column(String(32))
    map_crs: Mapped[str | None] = mapped_column(Text)
    georef: Mapped[dict[str, Any]] = json_object()
    building_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.building.id", ondelete="SET NULL"), index=True
    )
    building_link: Mapped[str | None] = mapped_column(String(16))
    element_count: Mapped[int] = mapped_column(Integer)
    min_z: Mapped[float | None] = mapped_column(Float)
    max_z: Mapped[float | None] = mapped_column(Float)
    footprint: Mapped[object | None] = geometry_column("MULTIPOLYGON", nullable=True)
    county_code: Mapped[str] = county_key()  # its building's, else its footprint's
    batch_id: Mapped[int | None] = batch_fk()


class BimStorey(Base):
    """An IfcBuildingStorey of a model."""

    __tablename__ = "bim_storey"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = _model_fk()
    ifc_guid: Mapped[str] = mapped_column(String(22))
    name: Mapped[str | None] = mapped_column(Text)
    elevation_m: Mapped[float | None] = mapped_column(Float)
    height_m: Mapped[float | None] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)
    county_code: Mapped[str] = county_key()  # its model's
    batch_id: Mapped[int | None] = batch_fk()


class BimSpace(Base):
    """An IfcSpace (a room) with its floor plan and its floor and ceiling heights."""

    __tablename__ = "bim_space"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = _model_fk()
    storey_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.bim_storey.id", ondelete="SET NULL"), index=True
    )
    storey: Mapped[str | None] = mapped_column(String(128), index=True)  # its storey's name
    ifc_guid: Mapped[str] = mapped_column(String(22), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    long_name: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[str | None] = mapped_column(Text)
    area_m2: Mapped[float | None] = mapped_column(Float)
    area_source: Mapped[str | None] = mapped_column(String(64))  # quantity name or geometry
    volume_m3: Mapped[float | None] = mapped_column(Float)
    floor_elevation_m: Mapped[float | None] = mapped_column(Float)
    ceiling_elevation_m: Mapped[float | None] = mapped_column(Float)
    footprint: Mapped[object | None] = geometry_column("MULTIPOLYGON", nullable=True)
    county_code: Mapped[str] = county_key()  # its model's
    batch_id: Mapped[int | None] = batch_fk()


class BimElement(Base):
    """One IFC product (wall, slab, space, ...) with its geometry in the storage CRS."""

    __tablename__ = "bim_element"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    building_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.building.id", ondelete="SET NULL"), index=True
    )
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.bim_model.id", ondelete="CASCADE"), index=True
    )
    model: Mapped[str] = mapped_column(String(200), index=True)  # source model name
    ifc_guid: Mapped[str] = mapped_column(String(22), index=True)
    ifc_class: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    ifc_type: Mapped[str | None] = mapped_column(Text)
    storey: Mapped[str | None] = mapped_column(String(128))
    storey_elevation_m: Mapped[float | None] = mapped_column(Float)
    properties: Mapped[dict[str, Any]] = json_object()  # property sets
    quantities: Mapped[dict[str, Any]] = json_object()
    material_color: Mapped[str | None] = mapped_column(String(9))
    geom: Mapped[object | None] = geometry_column("GEOMETRYZ", nullable=True)  # TIN Z
    footprint: Mapped[object | None] = geometry_column("MULTIPOLYGON", nullable=True)
    county_code: Mapped[str] = county_key()  # its model's
    batch_id: Mapped[int | None] = batch_fk()
