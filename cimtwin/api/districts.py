"""Named districts (e.g. the North Station business district): what is above and below ground,
and which buildings, underground structures, pipes and pipeline points meet a volume.

    GET  /districts                 the districts (with ?summary=true, each one's summary)
    GET  /districts/{slug}          summary above and below ground
    POST /districts/{slug}/query    area (polygon or box) x elevation range, per layer
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import shapely
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, model_validator

from cimtwin.api.admission import analysis_slot
from cimtwin.api.answers import DistrictList, DistrictSummary, VolumeAnswer, answer
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.errors import invalid
from cimtwin.api.geojson import dumps, feature_json
from cimtwin.api.inputs import AreaGeometry, Finite, StrictBody, crs_or_422, geometry_to_storage
from cimtwin.api.responses import json_response, summary_cache
from cimtwin.spatial.district_queries import (
    VOLUME_LAYERS,
    clip_to_district,
    district_row,
    district_summary,
    list_districts,
    volume_query,
)

router = APIRouter(tags=["districts"], dependencies=[Depends(require_read)])

Slug = Annotated[
    str,
    Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="district slug, e.g. north-station"),
]
MAX_LIST = 200
DEFAULT_QUERY_LIMIT = 1000
MAX_QUERY_LIMIT = 10_000


# --- list and summary -----------------------------------------------------------------------


@router.get(
    "/districts", summary="Named districts", responses=answer(DistrictList, "the districts")
)
async def districts(
    request: Request,
    conn: Conn,
    summary: Annotated[bool, Query(description="include each district's full summary")] = False,
) -> Response:
    found = (await list_districts(conn))[:MAX_LIST]
    if summary:
        for d in found:
            full = await district_summary(conn, d["slug"], summary_cache(request)) or {}
            d["above_ground"] = full.get("above_ground")
            d["below_ground"] = full.get("below_ground")
    public = request.app.state.settings.public_url
    root = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    for d in found:
        d["href"] = f"{root}/districts/{d['slug']}"
    return json_response({"districts": found, "count": len(found)})


@router.get(
    "/districts/{slug}",
    summary="A district above and below ground",
    responses=answer(DistrictSummary, "the district's summary"),
)
async def district(request: Request, slug: Slug, conn: Conn) -> Response:
    """Buildings, components, parcels by land use and open incidents above ground;
    underground structures by kind with their depth range and pipes by network and depth band
    below. Everything but the incidents is cached per process until the next import."""
    found = await district_summary(conn, slug, summary_cache(request))
    if found is None:
        raise HTTPException(404, f"no district {slug!r} (see /districts)")
    return json_response(found)


# --- volume query ---------------------------------------------------------------------------


class ElevationRange(StrictBody):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_m: float = Field(
        ...,
        alias="from",
        ge=-2000,
        le=10000,
        allow_inf_nan=False,
        description="lower end, metres (negative: below the ground)",
    )
    to_m: float = Field(
        ..., alias="to", ge=-2000, le=10000, allow_inf_nan=False, description="upper end, metres"
    )
    reference: Literal["ground", "absolute"] = Field(
        "ground",
        description="ground: metres from the ground at each object (the default); "
        "absolute: elevations in the height datum (1985)",
    )

    @model_validator(mode="after")
    def ordered(self) -> ElevationRange:
        if self.from_m > self.to_m:
            raise ValueError(f"from ({self.from_m}) is above to ({self.to_m})")
        return self


class VolumeQuery(StrictBody):
    """An area (polygon or box; the whole district when neither) and an elevation range."""

    geometry: AreaGeometry | None = Field(None, description="GeoJSON Polygon or MultiPolygon")
    bbox: Annotated[list[Finite], Field(min_length=4, max_length=4)] | None = Field(
        None, description="minx, miny, maxx, maxy"
    )
    crs: str = Field(
        "OGC:CRS84",
        max_length=200,
        description="CRS of geometry/bbox, (x, y) order: OGC:CRS84, EPSG:4490, EPSG:4547 ...",
    )
    elevation: ElevationRange
    ground_elevation_m: float | None = Field(
        None,
        ge=-500,
        le=9000,
        allow_inf_nan=False,
        description="with reference ground: measure from this one ground elevation instead of "
        "each object's own ground",
    )
    layers: list[Literal[VOLUME_LAYERS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(VOLUME_LAYERS), min_length=1, max_length=4
    )
    limit: int = Field(
        DEFAULT_QUERY_LIMIT, ge=1, le=MAX_QUERY_LIMIT, description="features per layer"
    )

    @model_validator(mode="after")
    def consistent(self) -> VolumeQuery:
        if self.geometry is not None and self.bbox is not None:
            raise ValueError("give geometry or bbox, not both")
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if x0 >= x1 or y0 >= y1:
                raise ValueError("bbox: minx must be below maxx and miny below maxy")
        if self.ground_elevation_m is not None and self.elevation.reference != "ground":
            raise ValueError("ground_elevation_m goes with reference 'ground'")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("layers: each layer once")
        return self


def _area(body: VolumeQuery) -> bytes | None:
    if body.geometry is None and body.bbox is None:
        return None
    crs = crs_or_422(body.crs)
    if body.bbox is not None:
        geom, what = shapely.box(*body.bbox), "bbox"
    else:
        assert body.geometry is not None  # one of the two, checked above
        geom = shapely.geometry.shape(body.geometry.model_dump())
        what = "geometry"
    try:
        geom = geometry_to_storage(geom, crs, what)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if geom.area <= 0:
        raise invalid(f"{what}: the area is empty")
    return shapely.to_wkb(geom)


def _range(lo: Any, hi: Any) -> dict[str, Any] | None:
    if lo is None or hi is None:
        return None
    return {"bottom": round(float(lo), 3), "top": round(float(hi), 3)}


@router.post(
    "/districts/{slug}/query",
    summary="Objects in a district that meet an area and an elevation range",
    # before Conn: a volume query with a 10 000-vertex polygon costs PostgreSQL as much as a
    # network analysis, so it waits for an analysis slot holding no connection
    dependencies=[Depends(analysis_slot)],
    responses=answer(VolumeAnswer, "the objects met, by layer"),
)
async def district_query(slug: Slug, body: VolumeQuery, conn: Conn) -> Response:
    """Buildings (base .. base + height), underground structures (bottom .. top), pipes (their
    3D extent: centre line +- half the section) and pipeline points (ground .. depth of the
    well or of the deepest pipe there) whose vertical extent meets the range inside the area
    (clipped to the district). With ``reference: ground`` the range is metres from each object's
    own ground (buildings: their base; pipes: survey depths; underground structures: ground
    estimated from the nearby survey points), negative below it."""
    region = _area(body)
    if await district_row(conn, slug) is None:
        raise HTTPException(404, f"no district {slug!r} (see /districts)")
    clipped, area = await clip_to_district(conn, slug, region)
    ev = body.elevation
    zmin, zmax, relative = ev.from_m, ev.to_m, ev.reference == "ground"
    if relative and body.ground_elevation_m is not None:
        zmin, zmax, relative = zmin + body.ground_elevation_m, zmax + body.ground_elevation_m, False
    head: dict[str, Any] = {
        "district": slug,
        "area_m2": area,
        "elevation": {
            "from": ev.from_m,
            "to": ev.to_m,
            "reference": ev.reference,
            "ground_elevation_m": body.ground_elevation_m,
            "absolute_from": zmin if not relative else None,
            "absolute_to": zmax if not relative else None,
        },
    }
    if clipped is None:
        head["note"] = "the area does not meet the district"
        results: dict[str, dict[str, Any]] = {
            layer: {"matched": 0, "rows": []} for layer in body.layers
        }
    else:
        results = await volume_query(
            conn, clipped, list(body.layers), zmin, zmax, relative, body.limit
        )
    parts = []
    for layer in body.layers:
        res = results[layer]
        feats = []
        for r in res["rows"]:
            props = dict(r[2])
            props["elevation_m"] = _range(r[3], r[4])
            props["relative_to_ground_m"] = _range(r[5], r[6])
            feats.append(feature_json(r[0], r[1], props))
        meta = dumps(
            {
                "type": "FeatureCollection",
                "numberMatched": res["matched"],
                "numberReturned": len(feats),
            }
        )
        parts.append(f'{dumps(layer)}:{meta[:-1]},"features":[{",".join(feats)}]}}')
    text = dumps(head)
    text = text[:-1] + ',"layers":{' + ",".join(parts) + "}}"
    return Response(
        text,
        media_type="application/json",
        headers={"Content-Crs": "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"},
    )
