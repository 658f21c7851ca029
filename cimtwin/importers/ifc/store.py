"""Writing a placed IFC model into PostGIS, inside the import's one transaction.

Rows go to ``bim_model``, ``bim_storey``, ``bim_space`` and ``bim_element`` (columns in
:mod:`cimtwin.spatial.bim`), each tagged with the import batch, so a re-import of the dataset
replaces them all and a failure leaves none. Element solids are written as TIN Z from their
float64 triangles (ISO WKB built with numpy, no text round trip).

The model is linked to a building: ``--building CODE`` (refused when no such building), else
the building whose footprint overlaps the model's footprint most, else a new ``building`` row
made from the model (code ``BIM-<IfcBuilding GUID>``, with ``-<hash of the dataset>`` when the
same IFC building was already imported as another dataset; its footprint, height above the
project's ±0.00, floors = storeys holding spaces, or storeys at or above ±0.00, the work grid
holding its footprint's inner point, as every import assigns buildings to grids). A building
made this way belongs to the import batch and goes with it on re-import. Each model also gets a
``building_representation`` row of kind ``bim`` whose ``uri`` is ``bim_model:<id>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import shapely
from psycopg.types.json import Jsonb

from cimtwin.errors import NotFoundError
from cimtwin.spatial.county import CountyPlacement
from cimtwin.spatial.sql_toolkit import T

#: ISO WKB type codes of TIN Z and Triangle Z
_TIN_Z, _TRIANGLE_Z = 1016, 1017
_TRIANGLE = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xyz", "<f8", (4, 3))]
)


def tin_wkb(triangles: np.ndarray) -> bytes | None:
    """ISO WKB of a TIN Z from (n, 3, 3) float64 triangles; None for no triangles."""
    tris = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    if len(tris) == 0:
        return None
    rec = np.zeros(len(tris), dtype=_TRIANGLE)
    rec["order"], rec["type"], rec["rings"], rec["points"] = 1, _TRIANGLE_Z, 1, 4
    rec["xyz"][:, :3] = tris
    rec["xyz"][:, 3] = tris[:, 0]  # a closed ring
    head = np.array([(1, _TIN_Z, len(tris))], dtype=[("o", "u1"), ("t", "<u4"), ("n", "<u4")])
    return head.tobytes() + rec.tobytes()


def footprint(triangles: np.ndarray, min_area: float = 1e-6) -> shapely.MultiPolygon | None:
    """The triangles projected on the plane and merged (0.1 mm grid): an element's plan."""
    tris = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)[:, :, :2]
    if len(tris) == 0:
        return None
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    area = 0.5 * np.abs(
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    )
    keep = tris[area > min_area]
    if len(keep) == 0:
        return None
    rings = np.concatenate([keep, keep[:, :1]], axis=1)
    merged = shapely.union_all(shapely.polygons(rings), grid_size=1e-4)
    return as_multi(merged)


def solid_volume(triangles: np.ndarray) -> float | None:
    """The volume a closed triangle shell encloses (divergence theorem; None when open or
    degenerate): a space's volume when the file gives none."""
    tris = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    if len(tris) < 4:
        return None
    o = tris.reshape(-1, 3).mean(axis=0)  # about the centre: no cancellation far from 0
    a, b, c = tris[:, 0] - o, tris[:, 1] - o, tris[:, 2] - o
    v = float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
    return abs(v) if abs(v) > 1e-9 else None


def as_multi(geom: Any) -> shapely.MultiPolygon | None:
    """The polygonal part of a geometry as a MultiPolygon (None when it has none)."""
    if geom is None or geom.is_empty:
        return None
    if isinstance(geom, shapely.Polygon):
        return shapely.MultiPolygon([geom])
    if isinstance(geom, shapely.MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, shapely.Polygon)]
    return shapely.MultiPolygon(parts) if parts else None


@dataclass
class StoreyRow:
    guid: str
    name: str | None
    elevation_m: float
    height_m: float | None
    position: int


@dataclass
class ElementRow:
    guid: str
    ifc_class: str
    name: str | None
    ifc_type: str | None
    storey_guid: str | None
    storey_name: str | None
    storey_elevation_m: float | None
    psets: dict[str, Any]
    quantities: dict[str, Any]
    color: str | None
    triangles: np.ndarray  # (n, 3, 3) storage CRS, 1985 heights
    footprint: shapely.MultiPolygon | None


@dataclass
class SpaceRow:
    guid: str
    storey_guid: str | None
    name: str | None
    long_name: str | None
    usage: str | None
    area_m2: float | None
    area_source: str | None
    volume_m3: float | None
    floor_elevation_m: float
    ceiling_elevation_m: float
    footprint: shapely.MultiPolygon | None


@dataclass
class PlacedModel:
    """A model ready to write: everything in the storage CRS with 1985 heights."""

    name: str
    source_file: str
    ifc_schema: str
    georef_path: str
    map_crs: str
    georef: dict[str, Any]
    building_code: str | None  # --building
    building_guid: str | None
    building_name: str | None
    base_elevation_m: float  # the project's ±0.00
    min_z: float | None
    max_z: float | None
    footprint: shapely.MultiPolygon | None
    floors: int
    storeys: list[StoreyRow] = field(default_factory=list)
    spaces: list[SpaceRow] = field(default_factory=list)
    elements: list[ElementRow] = field(default_factory=list)


def _wkb(geom: shapely.Geometry | None) -> bytes | None:
    return None if geom is None else shapely.to_wkb(geom, output_dimension=2)


def model_county(conn: psycopg.Connection, model: PlacedModel, building_id: int | None) -> str:
    """The district key of the model's rows: its building's county (the model's rows and
    its building stay on one node), else the county of the work grid holding its footprint,
    else the twin's one county (:class:`~cimtwin.spatial.county.CountyPlacement`);
    ImportFailed when none fits."""
    if building_id is not None:
        row = conn.execute(
            f"SELECT county_code FROM {T.building} WHERE id = %s", (building_id,)
        ).fetchone()
        if row is not None:
            return str(row[0])
    placement = CountyPlacement.load(conn)
    county = placement.at([model.footprint])[0] if model.footprint is not None else None
    where = f"{model.source_file}: bim_model"
    return str(placement.complete(np.array([county], dtype=object), where, [model.name])[0])


def link_building(
    conn: psycopg.Connection,
    model: PlacedModel,
    dataset: str,
    srid: int,
    batch_id: int,
) -> tuple[int | None, str]:
    """The building the model belongs to, and how it was found (given, overlap, created)."""
    if model.building_code:
        row = conn.execute(
            f"SELECT id FROM {T.building} WHERE building_code = %s", (model.building_code,)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"--building {model.building_code}: no building with that code in the twin"
            )
        return int(row[0]), "given"
    if model.footprint is None:
        return None, "none"
    fp = _wkb(model.footprint)
    row = conn.execute(
        f"SELECT id FROM {T.building} b, ST_GeomFromWKB(%s, %s) g WHERE "
        "ST_Intersects(b.footprint, g) AND ST_Area(ST_Intersection(b.footprint, g)) > 0 "
        "ORDER BY ST_Area(ST_Intersection(b.footprint, g)) DESC, b.id LIMIT 1",
        (fp, srid),
    ).fetchone()
    if row is not None:
        return int(row[0]), "overlap"
    code = f"BIM-{model.building_guid or hashlib.sha256(dataset.encode()).hexdigest()[:22]}"
    taken = conn.execute(f"SELECT 1 FROM {T.building} WHERE building_code = %s", (code,))
    if taken.fetchone() is not None:  # the same IFC building imported as another dataset
        code = f"{code}-{hashlib.sha256(dataset.encode()).hexdigest()[:5]}"
    height = (model.max_z or 0.0) - model.base_elevation_m
    if height <= 0 and model.min_z is not None and model.max_z is not None:
        height = model.max_z - model.min_z
    area = float(model.footprint.area)
    row = conn.execute(
        f"INSERT INTO {T.building} (building_code, name, use, height_m, floors, "
        "underground_floors, base_elevation_m, floor_area_m2, footprint, batch_id, county_code, "
        "grid_code) SELECT %s, %s, NULL, %s, %s, 0, %s, %s, f, %s, %s, "
        f"(SELECT g.code FROM {T.work_grid} g WHERE ST_Intersects(g.geom, ST_PointOnSurface(f)) "
        "ORDER BY g.code LIMIT 1) FROM ST_Multi(ST_GeomFromWKB(%s, %s)) f RETURNING id",
        (
            code[:32],
            model.building_name or model.name,
            height if height > 0 else None,
            model.floors,
            model.base_elevation_m,
            area * max(model.floors, 1),
            batch_id,
            model_county(conn, model, None),
            fp,
            srid,
        ),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING
    return int(row[0]), "created"


def write_model(
    conn: psycopg.Connection, model: PlacedModel, dataset: str, srid: int, batch_id: int
) -> dict[str, int]:
    """All rows of one model; returns counts per table."""
    building_id, link = link_building(conn, model, dataset, srid, batch_id)
    county = model_county(conn, model, building_id)
    row = conn.execute(
        f"INSERT INTO {T.bim_model} (dataset, name, source_file, ifc_schema, georef_path, "
        "map_crs, georef, building_id, building_link, element_count, min_z, max_z, footprint, "
        "batch_id, county_code) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "ST_Multi(ST_GeomFromWKB(%s, %s)), %s, %s) RETURNING id",
        (
            dataset,
            model.name,
            model.source_file,
            model.ifc_schema,
            model.georef_path,
            model.map_crs,
            Jsonb(model.georef),
            building_id,
            link,
            len(model.elements),
            model.min_z,
            model.max_z,
            _wkb(model.footprint),
            srid,
            batch_id,
            county,
        ),
    ).fetchone()
    assert row is not None
    model_id = int(row[0])
    storey_ids: dict[str, int] = {}
    storey_names = {s.guid: (s.name or "")[:128] or None for s in model.storeys}
    for s in model.storeys:
        r = conn.execute(
            f"INSERT INTO {T.bim_storey} (model_id, ifc_guid, name, elevation_m, height_m, "
            "position, batch_id, county_code) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (model_id, s.guid, s.name, s.elevation_m, s.height_m, s.position, batch_id, county),
        ).fetchone()
        assert r is not None
        storey_ids[s.guid] = int(r[0])
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {T.bim_space} (model_id, storey_id, storey, ifc_guid, name, long_name, "
            "usage, "
            "area_m2, area_source, volume_m3, floor_elevation_m, ceiling_elevation_m, footprint, "
            "batch_id, county_code) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "ST_Multi(ST_GeomFromWKB(%s, %s)), %s, %s)",
            [
                (
                    model_id,
                    storey_ids.get(sp.storey_guid or ""),
                    storey_names.get(sp.storey_guid or ""),
                    sp.guid,
                    sp.name,
                    sp.long_name,
                    sp.usage,
                    sp.area_m2,
                    sp.area_source,
                    sp.volume_m3,
                    sp.floor_elevation_m,
                    sp.ceiling_elevation_m,
                    _wkb(sp.footprint),
                    srid,
                    batch_id,
                    county,
                )
                for sp in model.spaces
            ],
        )
        cur.executemany(
            f"INSERT INTO {T.bim_element} (building_id, model_id, model, ifc_guid, ifc_class, "
            "name, ifc_type, storey, storey_elevation_m, properties, quantities, "
            "material_color, geom, footprint, batch_id, county_code) VALUES (%s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, ST_GeomFromWKB(%s, %s), "
            "ST_Multi(ST_GeomFromWKB(%s, %s)), %s, %s)",
            [
                (
                    building_id,
                    model_id,
                    model.name,
                    e.guid,
                    e.ifc_class,
                    e.name,
                    e.ifc_type,
                    (e.storey_name or "")[:128] or None,
                    e.storey_elevation_m,
                    Jsonb(e.psets),
                    Jsonb(e.quantities),
                    e.color,
                    tin_wkb(e.triangles),
                    srid,
                    _wkb(e.footprint),
                    srid,
                    batch_id,
                    county,
                )
                for e in model.elements
            ],
        )
    if building_id is not None:
        conn.execute(
            f"INSERT INTO {T.building_representation} (building_id, kind, uri, batch_id, "
            "county_code) SELECT id, 'bim', %s, %s, county_code FROM "
            f"{T.building} WHERE id = %s",
            (f"bim_model:{model_id}", batch_id, building_id),
        )
    return {
        "bim_model": 1,
        "bim_storey": len(model.storeys),
        "bim_space": len(model.spaces),
        "bim_element": len(model.elements),
        "building_created": int(link == "created"),
    }
