"""Indoor: the storeys and rooms of buildings with a BIM model, and what is at a 3D point.

GET /buildings/{code}/storeys            storeys of the building's BIM model(s), lowest first
GET /buildings/{code}/rooms?storey=      rooms (IfcSpace) as GeoJSON, optionally of one storey
GET /indoor/locate?lon=&lat=&h=          building, storey and room at a point, or "outside"
GET /bim/elements/{guid}                 one element: class, name, type, storey, property sets

Read from ``bim_model``, ``bim_storey``, ``bim_space`` and ``bim_element``
(:mod:`cimtwin.spatial.bim`). Heights are 1985 heights (m), like every height of the twin.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cimtwin.api.answers import BimElement, IndoorLocation, Storeys, answer
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.geojson import feature_json
from cimtwin.api.responses import FEATURE_COLLECTION, feature_collection, json_response
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T, geojson_text, one, rows

router = APIRouter(tags=["indoor"], dependencies=[Depends(require_read)])

BuildingCode = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="building code (e.g. BIM-...)")
]
#: a point this far (m) below a room's floor or above its ceiling still counts as in it
#: (a person's phone is above the floor slab's top, not on it)
HEIGHT_TOLERANCE_M = 0.5
ROOM_PROPERTIES = (
    "ifc_guid",
    "name",
    "long_name",
    "usage",
    "area_m2",
    "area_source",
    "volume_m3",
    "storey",
    "storey_elevation_m",
    "floor_elevation_m",
    "ceiling_elevation_m",
    "model",
    "building",
)


async def _building_id(conn: Conn, code: str) -> int:
    found = await one(conn, f"SELECT id FROM {T.building} WHERE building_code = %s", (code,))
    if found is None:
        raise HTTPException(404, f"no building with code {code!r}")
    return int(found[0])


@router.get(
    "/buildings/{code}/storeys",
    summary="Storeys of a building's BIM model",
    responses=answer(Storeys, "the storeys"),
)
async def storeys(code: BuildingCode, conn: Conn) -> Response:
    """Each storey: name, elevation and height (1985 m), its rooms' count and area, the model."""
    bid = await _building_id(conn, code)
    found = await rows(
        conn,
        f"SELECT s.name, s.elevation_m, s.height_m, s.position, m.name, s.ifc_guid, "
        f"count(r.id), sum(r.area_m2) FROM {T.bim_storey} s JOIN {T.bim_model} m "
        f"ON (m.county_code, m.id) = (s.county_code, s.model_id) LEFT JOIN {T.bim_space} r "
        "ON (r.county_code, r.storey_id) = (s.county_code, s.id) "
        "WHERE m.building_id = %s GROUP BY s.id, m.name ORDER BY m.name, s.position",
        (bid,),
    )
    return json_response(
        {
            "building": code,
            "storeys": [
                {
                    "name": r[0],
                    "elevation_m": r[1],
                    "height_m": r[2],
                    "position": r[3],
                    "model": r[4],
                    "ifc_guid": r[5],
                    "rooms": r[6],
                    "room_area_m2": r[7],
                }
                for r in found
            ],
        }
    )


_ROOMS_SQL = (
    f"SELECT r.id, {geojson_text('r.footprint')}, r.ifc_guid, r.name, r.long_name, r.usage, "
    "r.area_m2, r.area_source, r.volume_m3, s.name, s.elevation_m, r.floor_elevation_m, "
    f"r.ceiling_elevation_m, m.name, b.building_code FROM {T.bim_space} r JOIN {T.bim_model} m "
    f"ON (m.county_code, m.id) = (r.county_code, r.model_id) LEFT JOIN {T.bim_storey} s "
    "ON (s.county_code, s.id) = (r.county_code, r.storey_id) "
    f"LEFT JOIN {T.building} b ON (b.county_code, b.id) = (m.county_code, m.building_id) "
)


class RoomsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    storey: str | None = Field(
        None, min_length=1, max_length=128, description="storey name (e.g. 'Level 2')"
    )


@router.get(
    "/buildings/{code}/rooms",
    summary="Rooms of a building as GeoJSON",
    responses={200: FEATURE_COLLECTION},
)
async def rooms(code: BuildingCode, query: Annotated[RoomsQuery, Query()], conn: Conn) -> Response:
    """Rooms (IfcSpace) with their floor plan (CRS84), storey, area, volume and floor and
    ceiling heights; ``storey`` keeps one storey's (404 when the building has no such storey)."""
    bid = await _building_id(conn, code)
    params: list[Any] = [bid]
    where = "WHERE m.building_id = %s"
    if query.storey is not None:
        where += " AND s.name = %s"
        params.append(query.storey)
    found = await rows(conn, _ROOMS_SQL + where + " ORDER BY s.position, r.name", params)
    if query.storey is not None and not found:
        known = await rows(
            conn,
            f"SELECT DISTINCT s.name FROM {T.bim_storey} s JOIN {T.bim_model} m "
            "ON (m.county_code, m.id) = (s.county_code, s.model_id) WHERE m.building_id = %s "
            "ORDER BY 1",
            (bid,),
        )
        names = [k[0] for k in known]
        if query.storey not in names:
            raise HTTPException(
                404,
                f"building {code} has no storey {query.storey!r} (storeys: "
                f"{', '.join(map(str, names)) or 'none'})",
            )
    features = [
        feature_json(r[0], r[1], dict(zip(ROOM_PROPERTIES, r[2:], strict=True))) for r in found
    ]
    return feature_collection(features, {"building": code})


class IndoorPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lon: float = Field(..., ge=-180, le=180, allow_inf_nan=False, description="longitude")
    lat: float = Field(..., ge=-90, le=90, allow_inf_nan=False, description="latitude")
    h: float = Field(
        ..., ge=-500, le=9000, allow_inf_nan=False, description="1985 height of the point (m)"
    )


@router.get(
    "/indoor/locate",
    summary="Building, storey and room at a 3D point",
    responses=answer(IndoorLocation, "room, building or outside"),
)
async def locate(query: Annotated[IndoorPoint, Query()], conn: Conn) -> Response:
    """The room whose floor plan holds the point between its floor and ceiling (±0.5 m);
    else the BIM building whose model holds it, with the storey at that height; else
    ``"outside"``."""
    x, y = crs_mod.lonlat_to_storage(query.lon, query.lat)
    position: dict[str, float | None] = {
        "lon": query.lon,
        "lat": query.lat,
        "h": query.h,
        "x": x,
        "y": y,
    }
    if not (math.isfinite(x) and math.isfinite(y)):
        # far outside the storage CRS: no storage coordinates (inf is not JSON)
        position.update(x=None, y=None)
        return json_response({"position": position, "inside": False, "answer": "outside"})
    point = "ST_SetSRID(ST_MakePoint(%s, %s), %s)"
    room = await one(
        conn,
        _ROOMS_SQL
        + f"WHERE ST_Covers(r.footprint, {point}) AND %s BETWEEN r.floor_elevation_m - %s "
        "AND r.ceiling_elevation_m + %s ORDER BY r.ceiling_elevation_m - r.floor_elevation_m, "
        "r.id LIMIT 1",
        (x, y, SRID, query.h, HEIGHT_TOLERANCE_M, HEIGHT_TOLERANCE_M),
    )
    if room is not None:
        props = dict(zip(ROOM_PROPERTIES, room[2:], strict=True))
        return json_response(
            {
                "position": position,
                "inside": True,
                "answer": "room",
                "building": props["building"],
                "storey": props["storey"],
                "room": props,
            }
        )
    model = await one(
        conn,
        f"SELECT m.id, b.building_code, m.name FROM {T.bim_model} m LEFT JOIN {T.building} b "
        "ON (b.county_code, b.id) = (m.county_code, m.building_id) "
        f"WHERE ST_Covers(m.footprint, {point}) "
        "AND %s BETWEEN m.min_z - %s AND m.max_z + %s ORDER BY m.id DESC LIMIT 1",
        (x, y, SRID, query.h, HEIGHT_TOLERANCE_M, HEIGHT_TOLERANCE_M),
    )
    if model is None:
        return json_response({"position": position, "inside": False, "answer": "outside"})
    storey = await one(
        conn,
        f"SELECT name, elevation_m FROM {T.bim_storey} WHERE model_id = %s AND "
        "elevation_m <= %s + %s ORDER BY elevation_m DESC LIMIT 1",
        (model[0], query.h, HEIGHT_TOLERANCE_M),
    )
    return json_response(
        {
            "position": position,
            "inside": True,
            "answer": "building",
            "building": model[1],
            "model": model[2],
            "storey": storey[0] if storey else None,
            "room": None,
        }
    )


Guid = Annotated[
    str, Path(pattern=r"^[0-9A-Za-z_$]{22}$", description="IFC GlobalId (22 characters)")
]


@router.get(
    "/bim/elements/{guid}",
    summary="One BIM element by its IFC GlobalId",
    responses=answer(BimElement, "the element"),
)
async def element(guid: Guid, conn: Conn) -> Response:
    """Class, name, type, storey, property sets, quantities and colour of an element, and the
    model and building it belongs to; ``other_models`` lists further models holding the GUID
    (the same file imported as two datasets)."""
    found = await rows(
        conn,
        "SELECT e.ifc_guid, e.ifc_class, e.name, e.ifc_type, e.storey, e.storey_elevation_m, "
        "e.properties, e.quantities, e.material_color, m.name, m.dataset, b.building_code, "
        "ST_ZMin(e.geom), ST_ZMax(e.geom) "
        f"FROM {T.bim_element} e LEFT JOIN {T.bim_model} m "
        "ON (m.county_code, m.id) = (e.county_code, e.model_id) "
        f"LEFT JOIN {T.building} b ON (b.county_code, b.id) = (e.county_code, e.building_id) "
        "WHERE e.ifc_guid = %s "
        "ORDER BY e.id DESC LIMIT 20",
        (guid,),
    )
    if not found:
        raise HTTPException(404, f"no BIM element with GlobalId {guid!r}")
    r = found[0]
    return json_response(
        {
            "ifc_guid": r[0],
            "ifc_class": r[1],
            "name": r[2],
            "ifc_type": r[3],
            "storey": r[4],
            "storey_elevation_m": r[5],
            "property_sets": r[6],
            "quantities": r[7],
            "material_color": r[8],
            "model": r[9],
            "dataset": r[10],
            "building": r[11],
            "bottom_m": r[12],
            "top_m": r[13],
            "other_models": [o[10] for o in found[1:]],
        }
    )
