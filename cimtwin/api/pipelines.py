"""Pipeline analyses over HTTP (JSON / GeoJSON); the work is in
:mod:`cimtwin.spatial.pipelines` (one module per analysis).

    POST /pipelines/isolation          valves to close for a burst pipe, what they cut off
    POST /pipelines/trace              upstream / downstream / connected trace
    POST /pipelines/clearance-check    GB 50289-2016 clearances between pipes, and to buildings
    POST /pipelines/excavation-check   pipes and points an excavation reaches, riskiest first
    POST /pipelines/cross-section      pipes crossed by a section line, and the ground along it
    GET  /pipelines/{id}/profile       longitudinal profile along a chain of pipes
    GET  /pipelines/qa?network=        disconnected parts, dangling ends, flow loops, slopes

Coordinates in bodies are (x, y) as in GeoJSON: longitude, latitude in OGC:CRS84 (the
default), or easting, northing with ``"crs": "EPSG:4547"`` (the storage CRS). Geometries in
answers are GeoJSON in CRS84. Errors are ``{"code", "description"}``: 422 for a body that does
not validate (each problem listed with where it is), 400 for a request the data cannot answer
(a point too far from any pipe), 404 for unknown ids, 503 when a query runs past the
statement timeout.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, overload

import shapely
import shapely.errors
import shapely.geometry
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from cimtwin.api.admission import analysis_slot
from cimtwin.api.answers import (
    ClearanceCheck,
    CrossSection,
    ExcavationCheck,
    Isolation,
    NetworkQA,
    Profile,
    answer,
)
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.errors import error_response
from cimtwin.api.geojson import GEOJSON, JSON, dumps
from cimtwin.api.inputs import (
    AreaGeometry,
    InputCrs,
    MultiPolygonIn,
    PolygonIn,
    Position,
    StrictBody,
    geometry_to_storage,
    input_crs,
    positions_to_storage,
)
from cimtwin.api.responses import ANALYSIS_ERRORS, FEATURE_COLLECTION
from cimtwin.reference import network_codes
from cimtwin.spatial.base import SRID
from cimtwin.spatial.pipelines.clearance import clearance_analysis
from cimtwin.spatial.pipelines.isolation import SERVICE_RADIUS_M, isolation_analysis
from cimtwin.spatial.pipelines.profile import profile_analysis
from cimtwin.spatial.pipelines.qa import qa_analysis
from cimtwin.spatial.pipelines.sections import cross_section_analysis, excavation_analysis
from cimtwin.spatial.pipelines.trace import trace_analysis

router = APIRouter(
    tags=["pipelines"], dependencies=[Depends(require_read)], responses=ANALYSIS_ERRORS
)
Analysis = Depends(analysis_slot)  # before Conn: waiting analyses hold no connection

MAX_CLEARANCE_AREA_M2 = 4_000_000.0  # 2 km x 2 km
MAX_EXCAVATION_AREA_M2 = 250_000.0
MAX_SECTION_M = 2_000.0
MAX_TOLERANCE_M = 100.0

ValveRef = Annotated[str, StringConstraints(pattern=r"^(valve|node):\d{1,18}$")]
CRS_HELP = (
    "CRS of the coordinates: OGC:CRS84 (longitude, latitude; the default), EPSG:4490, "
    f"EPSG:{SRID} (the storage CRS: easting, northing) or another 2D EPSG CRS; always in x, y "
    "order"
)


@overload
def _network(value: str) -> str: ...
@overload
def _network(value: None) -> None: ...
def _network(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    if code not in network_codes():
        raise ValueError(
            f"{value!r} is not a CJJ 61 network code ({', '.join(sorted(network_codes()))})"
        )
    return code


class Body(StrictBody):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    crs: str = Field("OGC:CRS84", description=CRS_HELP)

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str) -> str:
        input_crs(value)
        return value

    @property
    def in_crs(self) -> InputCrs:
        return input_crs(self.crs)


def polygon_storage(
    poly: PolygonIn | MultiPolygonIn, crs: InputCrs, max_area_m2: float, what: str
) -> bytes:
    """WKB of the polygon in the storage CRS, valid and of a bounded size."""
    try:
        geom = shapely.geometry.shape({"type": poly.type, "coordinates": poly.coordinates})
    except (ValueError, TypeError, IndexError, shapely.errors.GEOSException) as exc:
        raise ValueError(f"{what}: not a GeoJSON {poly.type} ({exc})") from None
    geom = geometry_to_storage(geom, crs, what, "polygon")
    if geom.area <= 0:
        raise ValueError(f"{what}: the polygon has no area")
    if geom.area > max_area_m2:
        raise ValueError(
            f"{what}: {geom.area / 1e6:.3f} km² is larger than the "
            f"{max_area_m2 / 1e6:g} km² one request may cover"
        )
    return shapely.to_wkb(geom)


# --- bodies ---------------------------------------------------------------------------------


class IsolationRequest(Body):
    """A burst pipe by ``segment_id`` or by a ``point`` snapped to the nearest pipe."""

    segment_id: int | None = Field(None, ge=1, description="pipeline_segment.id")
    point: Position | None = Field(None, description="snapped to the nearest pipe")
    tolerance_m: float = Field(
        10.0, gt=0, le=MAX_TOLERANCE_M, description="how far the point may be from the pipe"
    )
    network: str | None = Field(None, description="only pipes of this network are snapped to")
    dataset: str | None = Field(None, max_length=200, description="only pipes of this dataset")
    failed_valves: list[ValveRef] = Field(
        default_factory=list,
        max_length=1000,
        description="valves that cannot be closed: valve:<pipeline_valve id> or "
        "node:<survey valve point id>; the isolation grows to the next ring",
    )
    service_radius_m: float = Field(
        SERVICE_RADIUS_M,
        gt=0,
        le=500,
        description="buildings are served by the nearest pipe within this distance",
    )
    max_features: int = Field(
        2000, ge=0, le=20_000, description="isolated segments returned as features"
    )
    _xy: tuple[float, float] | None = PrivateAttr(None)

    @field_validator("network")
    @classmethod
    def _net(cls, value: str | None) -> str | None:
        return _network(value)

    @model_validator(mode="after")
    def _one_start(self) -> IsolationRequest:
        if (self.segment_id is None) == (self.point is None):
            raise ValueError("give exactly one of segment_id and point")
        if self.point is not None:
            self._xy = tuple(positions_to_storage([self.point], self.in_crs, "point")[0])
        return self


class TraceStart(StrictBody):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    segment_id: int | None = Field(None, ge=1)
    node_id: int | None = Field(None, ge=1)
    point: Position | None = None

    @model_validator(mode="after")
    def _one(self) -> TraceStart:
        given = [k for k in ("segment_id", "node_id", "point") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of segment_id, node_id and point")
        return self


class TraceRequest(Body):
    network: str = Field(description="CJJ 61 network code (JS, PS, RQ, DL, TX ...)")
    start: TraceStart
    direction: Literal["upstream", "downstream", "connected"] = "downstream"
    max_distance_m: float | None = Field(
        None, gt=0, le=1_000_000, description="stop this far along the network"
    )
    stop_at_valves: bool = False
    stop_at_node_types: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] = (
        Field(
            default_factory=list,
            max_length=20,
            description="stop at points whose feature or appurtenance contains one of these, "
            "e.g. 出水口, 阀门",
        )
    )
    tolerance_m: float = Field(10.0, gt=0, le=MAX_TOLERANCE_M)
    max_features: int = Field(
        5000,
        ge=0,
        le=50_000,
        description="segments and nodes returned as features (nearest "
        "first); totals count everything",
    )
    _xy: tuple[float, float] | None = PrivateAttr(None)

    @field_validator("network")
    @classmethod
    def _net(cls, value: str) -> str:
        return _network(value)

    @model_validator(mode="after")
    def _point(self) -> TraceRequest:
        if self.start.point is not None:
            self._xy = tuple(
                positions_to_storage([self.start.point], self.in_crs, "start.point")[0]
            )
        return self


class ClearanceRequest(Body):
    area: AreaGeometry | None = Field(None, description="pipes that meet this polygon are checked")
    networks: list[str] | None = Field(
        None, min_length=1, max_length=12, description="pipes of these networks are checked"
    )
    buildings: bool = Field(True, description="check pipe-building clearances too")
    max_results: int = Field(1000, ge=1, le=10_000)
    _wkb: bytes | None = PrivateAttr(None)

    @field_validator("networks")
    @classmethod
    def _nets(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(_network(v) for v in value))

    @model_validator(mode="after")
    def _scope(self) -> ClearanceRequest:
        if self.area is None and not self.networks:
            raise ValueError("give an area, networks, or both")
        if self.area is not None:
            self._wkb = polygon_storage(self.area, self.in_crs, MAX_CLEARANCE_AREA_M2, "area")
        return self


class ExcavationRequest(Body):
    polygon: AreaGeometry
    depth: float = Field(gt=0, le=50, description="excavation depth below ground (m)")
    max_results: int = Field(5000, ge=1, le=20_000)
    _wkb: bytes = PrivateAttr(b"")  # set by _area

    @model_validator(mode="after")
    def _area(self) -> ExcavationRequest:
        self._wkb = polygon_storage(self.polygon, self.in_crs, MAX_EXCAVATION_AREA_M2, "polygon")
        return self


class LineIn(StrictBody):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["LineString"]
    coordinates: Annotated[list[Position], Field(min_length=2, max_length=2)]


class CrossSectionRequest(Body):
    line: Annotated[list[Position], Field(min_length=2, max_length=2)] | LineIn = Field(
        description="two positions, or a GeoJSON LineString with two positions"
    )
    max_results: int = Field(2000, ge=1, le=10_000)
    _wkb: bytes = PrivateAttr(b"")  # set by _line, as _length
    _length: float = PrivateAttr(0.0)

    @model_validator(mode="after")
    def _line(self) -> CrossSectionRequest:
        coords = self.line.coordinates if isinstance(self.line, LineIn) else self.line
        xy = positions_to_storage(coords, self.in_crs, "line")
        line = shapely.LineString(xy)
        if line.length < 0.01:
            raise ValueError("line: the two points are the same")
        if line.length > MAX_SECTION_M:
            raise ValueError(
                f"line: {line.length:.0f} m is longer than the {MAX_SECTION_M:g} m a section may be"
            )
        self._wkb, self._length = shapely.to_wkb(line), float(line.length)
        return self


def _json(body: Any, media_type: str = JSON) -> Response:
    return Response(dumps(body), media_type=media_type)


# --- endpoints --------------------------------------------------------------------------------


@router.post(
    "/pipelines/isolation",
    dependencies=[Analysis],
    summary="Valves to close for a burst pipe",
    responses=answer(Isolation, "the isolation plan"),
)
async def isolation(body: IsolationRequest, conn: Conn) -> Response:
    """The valve segment containing the burst pipe: the valves on its boundary, the segments
    and points it holds, and the buildings (residents) they serve. A failed valve merges the
    segments on both of its sides, so the next ring of valves closes instead.

    Valves: ``pipeline_valve`` rows (``valve:<id>``) and survey valve points (``node:<id>``,
    appurtenance containing 阀; closing one cuts every pipe that meets it off it). A building is
    served by the nearest pipe of the same network within ``service_radius_m`` of its footprint
    (transmission / raw-water mains excluded)."""
    return _json(
        await isolation_analysis(
            conn,
            segment_id=body.segment_id,
            point=body._xy,
            tolerance_m=body.tolerance_m,
            network=body.network,
            dataset=body.dataset,
            failed_valves=body.failed_valves,
            service_radius_m=body.service_radius_m,
            max_features=body.max_features,
        )
    )


@router.post(
    "/pipelines/trace",
    dependencies=[Analysis],
    summary="Trace up or down the flow, or by connectivity",
    responses={200: FEATURE_COLLECTION},
)
async def trace(body: TraceRequest, conn: Conn) -> Response:
    """Gravity networks (PS) follow ``flow_direction``; pressure networks are traced by
    connectivity whatever the direction asked. A GeoJSON FeatureCollection of the segments and
    points reached (each with its network distance from the start) plus totals."""
    st = body.start
    return _json(
        await trace_analysis(
            conn,
            network=body.network,
            segment_id=st.segment_id,
            node_id=st.node_id,
            point=body._xy,
            tolerance_m=body.tolerance_m,
            direction=body.direction,
            max_distance_m=body.max_distance_m,
            stop_at_valves=body.stop_at_valves,
            stop_at_node_types=body.stop_at_node_types,
            max_features=body.max_features,
        ),
        GEOJSON,
    )


@router.post(
    "/pipelines/clearance-check",
    dependencies=[Analysis],
    summary="GB 50289-2016 clearances",
    responses=answer(ClearanceCheck, "violations and counts"),
)
async def clearance_check(body: ClearanceRequest, conn: Conn) -> Response:
    """Pipe pairs (of one network too, unless joined at a node), and pipes and buildings,
    closer than GB 50289-2016 allows, with measured and required distance, the rule's CSV row
    and its verification status (UNVERIFIED rows are flagged). Pairs the table has no row for
    are listed apart."""
    return _json(
        await clearance_analysis(
            conn,
            area=body._wkb,
            networks=body.networks,
            buildings=body.buildings,
            max_results=body.max_results,
        )
    )


@router.post(
    "/pipelines/excavation-check",
    dependencies=[Analysis],
    summary="What an excavation would hit",
    responses=answer(ExcavationCheck, "pipes and nodes hit"),
)
async def excavation_check(body: ExcavationRequest, conn: Conn) -> Response:
    """Pipes whose top is above the excavation bottom inside the polygon, and the points
    (chambers) in it, with owner, depth and network: gas and power first, then shallower."""
    return _json(
        await excavation_analysis(
            conn, area=body._wkb, depth_m=body.depth, max_results=body.max_results
        )
    )


@router.post(
    "/pipelines/cross-section",
    dependencies=[Analysis],
    summary="Pipes crossed by a section line",
    responses=answer(CrossSection, "the section"),
)
async def cross_section(body: CrossSectionRequest, conn: Conn) -> Response:
    """Every pipe the line crosses, with its offset along the line and its centre, top and
    bottom elevations there, and the ground sampled along the line."""
    return _json(
        await cross_section_analysis(
            conn, line=body._wkb, length_m=body._length, max_results=body.max_results
        )
    )


@router.get(
    "/pipelines/qa",
    dependencies=[Analysis],
    summary="Topology QA of a network",
    responses=answer(NetworkQA, "QA per network"),
)
async def qa(
    conn: Conn,
    network: Annotated[
        str | None, Query(description="CJJ 61 network code; all when absent")
    ] = None,
    max_items: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """Disconnected sub-networks (count and sizes), dangling ends (degree-1 points that are
    not outfalls or other purposeful ends), flow loops in gravity networks (cycles of the
    directed graph) and reversed slopes (gravity pipes whose invert rises with the flow)."""
    try:
        net = _network(network)
    except ValueError as exc:
        return error_response(
            422,
            f"network: {exc}",
            errors=[{"where": "network", "message": str(exc), "type": "value_error"}],
        )
    return _json(await qa_analysis(conn, net, max_items))


@router.get(
    "/pipelines/{segment_id}/profile",
    dependencies=[Analysis],
    summary="Longitudinal profile",
    responses=answer(Profile, "the profile"),
)
async def profile(
    conn: Conn,
    segment_id: Annotated[int, Path(ge=1, description="pipeline_segment.id to start at")],
    reverse: Annotated[
        bool,
        Query(description="against the flow (gravity) or from the start pipe's to-node backwards"),
    ] = False,
    max_segments: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Chainage, pipe centre/top/bottom elevations and the ground line along a chain of pipes:
    with the flow in gravity networks (the largest pipe at a junction), straight through in
    pressure networks."""
    return _json(
        await profile_analysis(conn, segment_id, reverse=reverse, max_segments=max_segments)
    )
