"""Incidents (事件): report, list, read, edit through the status workflow, and the dispatch
context around one incident.

    POST  /incidents                    (editor)  201 + the incident as a GeoJSON Feature
    GET   /incidents?bbox=&status=&since=&until=&type=&limit=&offset=
    GET   /incidents/{id}
    PATCH /incidents/{id}               (editor)  status: reported -> dispatched ->
                                        in_progress -> resolved -> closed; resolved ->
                                        in_progress reopens; a move reassigns the grid
    GET   /incidents/{id}/context?radius=

Edits reach the tile caches through the incident table's NOTIFY trigger.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
import shapely
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from psycopg import AsyncConnection
from pydantic import ConfigDict, Field, field_validator, model_validator

from cimtwin.api.admission import analysis_slot
from cimtwin.api.answers import IncidentContext, answer
from cimtwin.api.auth import Editor, require_read
from cimtwin.api.db import PrimaryConn as Conn
from cimtwin.api.errors import invalid
from cimtwin.api.geojson import FILTER_MAX, FILTER_MIN, GEOJSON, dumps, feature_json, rfc3339
from cimtwin.api.inputs import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    BBoxQuery,
    PointIn,
    StrictBody,
    crs_or_422,
    geometry_to_storage,
)
from cimtwin.api.responses import CRS84_HEADER, FEATURE, FEATURE_COLLECTION, feature_collection
from cimtwin.spatial.incident import INCIDENT_STATUSES, TRANSITIONS
from cimtwin.spatial.incident_context import (
    BURST_SNAP_M,
    SNAP_M,
    WATER,
    analysis_isolation,
    buildings_within,
    describe_valves,
    hydrants,
    nearest_segment,
    pipes_within,
    responsible_grid,
    simple_isolation,
)
from cimtwin.spatial.incident_queries import (
    COLUMNS,
    IncidentFilter,
    create_incident,
    external_id_taken,
    get_incident,
    list_incidents,
    update_incident,
)

router = APIRouter(tags=["incidents"])
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="incident id")]
Reader = Depends(require_read)

TYPE_RE = r"^[a-z][a-z0-9_]{1,31}$"
MAX_ATTRIBUTES_BYTES = 16_384
DEFAULT_RADIUS_M = 300.0
MAX_RADIUS_M = 2000.0
MAX_LISTED = 200
Status = Literal["reported", "dispatched", "in_progress", "resolved", "closed"]
assert set(Status.__args__) == set(INCIDENT_STATUSES)  # type: ignore[attr-defined]
#: the earliest report time taken; the latest is a day from now (clocks and time zones off)
REPORTED_MIN = datetime(1900, 1, 1, tzinfo=UTC)
REPORTED_AHEAD = timedelta(days=1)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def sane_report_time(value: datetime | None) -> datetime | None:
    """A report time from 1900 to a day ahead: anything else is a typo or a broken clock, and
    would be stored as something no reader can show (year 1 BC from 0001-01-01+14:00)."""
    value = _utc(value)
    if value is None:
        return None
    latest = datetime.now(UTC) + REPORTED_AHEAD
    if not REPORTED_MIN <= value <= latest:
        raise ValueError(
            f"must be between {REPORTED_MIN:%Y-%m-%dT%H:%M:%SZ} and 1 day into "
            f"the future ({latest:%Y-%m-%dT%H:%M:%SZ}), not {value.isoformat()}"
        )
    return value


class IncidentFields(StrictBody):
    """What a client may set on an incident (all optional here; see the create model)."""

    incident_type: str | None = Field(
        None, pattern=TYPE_RE, description="e.g. pipe_burst, gas_leak, fire"
    )
    severity: int | None = Field(None, ge=1, le=4, description="1 low .. 4 critical")
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    geometry: PointIn | None = Field(None, description="GeoJSON Point in crs, (x, y) order")
    crs: str = Field(
        "OGC:CRS84",
        max_length=200,
        description="CRS of geometry: OGC:CRS84, EPSG:4490, EPSG:4547 ...",
    )
    elevation_m: float | None = Field(None, ge=-500, le=9000, allow_inf_nan=False)
    external_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$"
    )
    attributes: dict[str, Any] | None = Field(None, description="free JSON object (16 KB)")
    reported_at: datetime | None = Field(
        None, description="RFC 3339, from 1900 to a day ahead; default (on create) now"
    )

    @field_validator("reported_at")
    @classmethod
    def sane_time(cls, value: datetime | None) -> datetime | None:
        return sane_report_time(value)

    @field_validator("title")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip() if value is not None else None

    @field_validator("attributes")
    @classmethod
    def small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:  # NaN and 1e400 (infinity) are no JSON PostgreSQL takes
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise ValueError("numbers must be finite (no NaN, Infinity or 1e400)") from None
        if len(text.encode()) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON")
        return value

    def storage_xy(self) -> tuple[float, float] | None:
        if self.geometry is None:
            return None
        crs = crs_or_422(self.crs)
        try:
            pt = geometry_to_storage(shapely.Point(self.geometry.coordinates[:2]), crs, "geometry")
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return pt.x, pt.y


class IncidentCreate(IncidentFields):
    incident_type: str = Field(..., pattern=TYPE_RE, description="e.g. pipe_burst, fire")
    severity: int = Field(..., ge=1, le=4, description="1 low .. 4 critical")
    title: str = Field(..., min_length=1, max_length=200)
    geometry: PointIn = Field(..., description="GeoJSON Point in crs, (x, y) order")


class IncidentPatch(IncidentFields):
    status: Status | None = Field(None, description="next status in the workflow")

    @model_validator(mode="after")
    def something(self) -> IncidentPatch:
        changed = self.model_fields_set - {"crs"}
        if not changed:
            raise ValueError(
                "nothing to change: give at least one of "
                f"{', '.join(f for f in type(self).model_fields if f != 'crs')}"
            )
        for name in ("incident_type", "severity", "title", "status", "geometry", "reported_at"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


def _feature(row: tuple) -> str:
    props = dict(zip(COLUMNS, row[2 : 2 + len(COLUMNS)], strict=True))
    props["next_statuses"] = list(TRANSITIONS.get(props["status"], ()))
    return feature_json(row[0], row[1], props)


def _feature_response(
    row: tuple, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        _feature(row),
        status_code=status,
        media_type=GEOJSON,
        headers={"Content-Crs": CRS84_HEADER, **(headers or {})},
    )


def _external_id_used(external_id: str | None) -> HTTPException:
    return HTTPException(409, f"external_id {external_id!r} is already used by another incident")


async def _unique_external_id(
    conn: AsyncConnection, external_id: str | None, other_than: int | None = None
) -> None:
    """409 before writing when the external_id is taken (the unique constraint decides
    races: see :func:`create`)."""
    if external_id and await external_id_taken(conn, external_id, other_than):
        raise _external_id_used(external_id)


def _on_external_id(exc: psycopg.errors.UniqueViolation) -> bool:
    """A unique violation of the external_id: a concurrent request took it first."""
    return "external_id" in (exc.diag.constraint_name or "")


@router.post(
    "/incidents",
    summary="Report an incident (editor)",
    status_code=201,
    responses={201: FEATURE, 409: {"description": "the external_id is already used"}},
)
async def create(body: IncidentCreate, conn: Conn, _: Editor) -> Response:
    """Insert and read back in one transaction: nothing is stored that is not answered."""
    xy = body.storage_xy()
    if xy is None:
        raise invalid("geometry: an incident needs a position")
    await _unique_external_id(conn, body.external_id)
    values = body.model_dump(exclude={"geometry", "crs"})
    try:
        async with conn.transaction():
            new_id = await create_incident(conn, values, *xy)
            row = await get_incident(conn, new_id)
    except psycopg.errors.UniqueViolation as exc:
        if not _on_external_id(exc):
            raise
        raise _external_id_used(body.external_id) from None
    assert row is not None  # read back in the transaction that wrote it
    return _feature_response(row, 201, {"Location": f"/incidents/{new_id}"})


# --- list -----------------------------------------------------------------------------------


class IncidentQuery(BBoxQuery):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(None, max_length=200, description="status(es), comma-separated")
    type: str | None = Field(None, max_length=500, description="type(s), comma-separated")
    since: datetime | None = Field(None, description="reported at or after (RFC 3339)")
    until: datetime | None = Field(None, description="reported before (RFC 3339)")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10**9)

    @field_validator("status")
    @classmethod
    def statuses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        items = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in items if s not in INCIDENT_STATUSES]
        if bad or not items:
            raise ValueError(
                f"{', '.join(bad) or 'empty'}: statuses are {', '.join(INCIDENT_STATUSES)}"
            )
        return ",".join(items)

    @field_validator("type")
    @classmethod
    def types(cls, value: str | None) -> str | None:
        if value is None:
            return None
        items = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in items if not re.fullmatch(TYPE_RE, s)]
        if bad or not items or len(items) > 50:
            raise ValueError(
                f"{', '.join(bad) or 'empty or too many'}: types are lower-case "
                "words with _ (e.g. pipe_burst), at most 50"
            )
        return ",".join(items)

    @model_validator(mode="after")
    def period(self) -> IncidentQuery:
        self.since, self.until = _utc(self.since), _utc(self.until)
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and not FILTER_MIN <= value <= FILTER_MAX:
                raise ValueError(
                    f"{name}: outside the range this API filters on, "
                    f"{rfc3339(FILTER_MIN)} to {rfc3339(FILTER_MAX)}"
                )
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


@router.get(
    "/incidents",
    summary="Incidents as GeoJSON",
    dependencies=[Reader],
    responses={200: FEATURE_COLLECTION},
)
async def incidents(query: Annotated[IncidentQuery, Query()], conn: Conn) -> Response:
    try:
        area = query.storage_box()
    except ValueError as exc:
        raise invalid(str(exc)) from None
    f = IncidentFilter(
        area,
        query.status.split(",") if query.status else [],
        query.type.split(",") if query.type else [],
        query.since,
        query.until,
        query.limit,
        query.offset,
    )
    found, matched = await list_incidents(conn, f)
    return feature_collection([_feature(r) for r in found], {"numberMatched": matched})


@router.get(
    "/incidents/{incident_id}",
    summary="One incident",
    dependencies=[Reader],
    responses={200: FEATURE},
)
async def incident(incident_id: IncidentId, conn: Conn) -> Response:
    row = await get_incident(conn, incident_id)
    if row is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return _feature_response(row)


@router.patch(
    "/incidents/{incident_id}",
    summary="Edit an incident (editor)",
    responses={
        200: FEATURE,
        409: {"description": "the external_id is already used, or a status change not allowed"},
    },
)
async def edit(incident_id: IncidentId, body: IncidentPatch, conn: Conn, _: Editor) -> Response:
    xy = body.storage_xy()
    changes = {k: getattr(body, k) for k in body.model_fields_set if k not in ("geometry", "crs")}
    if "external_id" in changes:
        await _unique_external_id(conn, changes["external_id"], incident_id)
    try:
        done = await update_incident(conn, incident_id, changes, xy)
    except psycopg.errors.UniqueViolation as exc:
        if not _on_external_id(exc):
            raise
        raise _external_id_used(changes.get("external_id")) from None
    row = await get_incident(conn, incident_id) if done is not None else None
    if row is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return _feature_response(row)


# --- context --------------------------------------------------------------------------------


@router.get(
    "/incidents/{incident_id}/context",
    summary="Dispatch context of an incident",
    dependencies=[Reader, Depends(analysis_slot)],
    responses=answer(IncidentContext, "the incident's dispatch context"),
)
async def context(
    incident_id: IncidentId,
    conn: Conn,
    radius: Annotated[
        float,
        Query(gt=0, le=MAX_RADIUS_M, allow_inf_nan=False, description="metres around the incident"),
    ] = DEFAULT_RADIUS_M,
    hydrant_count: Annotated[int, Query(alias="hydrants", ge=0, le=50)] = 5,
    listed: Annotated[
        int, Query(alias="max_items", ge=1, le=MAX_LISTED, description="items listed per kind")
    ] = 50,
) -> Response:
    """The grid that dispatches (with its officer); the nearest hydrants (along the water
    network when the incident is within 50 m of a water pipe, else in a straight line; the
    answer says which); for a pipe burst, the valves to close to isolate the nearest water
    pipe; gas (RQ) and power (DL) pipes within the radius with distances; buildings and
    residents within the radius."""
    row = await get_incident(conn, incident_id)
    if row is None:
        raise HTTPException(404, f"no incident {incident_id}")
    props = dict(zip(COLUMNS, row[2 : 2 + len(COLUMNS)], strict=True))
    x, y = row[-2], row[-1]
    out: dict[str, Any] = {
        "incident": {
            "id": row[0],
            "type": props["incident_type"],
            "status": props["status"],
            "severity": props["severity"],
            "title": props["title"],
            "geometry": json.loads(row[1]) if row[1] else None,
        },
        "radius_m": radius,
        "grid": await responsible_grid(conn, props["grid_code"], x, y),
    }
    burst = props["incident_type"] == "pipe_burst"
    water = await nearest_segment(conn, x, y, WATER, BURST_SNAP_M if burst else min(SNAP_M, radius))
    out["hydrants"] = await hydrants(conn, x, y, radius, hydrant_count, water)
    if burst:
        out["isolation"] = await _isolation(conn, x, y, water)
    pipes = await pipes_within(conn, x, y, radius, ("RQ", "DL"), listed)
    out["gas_pipes"], out["power_cables"] = pipes["RQ"], pipes["DL"]
    out["buildings"] = await buildings_within(conn, x, y, radius, listed)
    return Response(dumps(out), media_type="application/json")


async def _isolation(
    conn: AsyncConnection, x: float, y: float, water: dict[str, Any] | None
) -> dict[str, Any]:
    """Valves to close: by the pipeline analysis module's isolation when it is there (valve
    segments of the whole water network), else by a walk from the burst pipe to the valves
    around it (:func:`simple_isolation`)."""
    found = None
    if water is not None and water["offset_m"] <= BURST_SNAP_M:
        found = await analysis_isolation(conn, water)
    if found is None:
        found = await simple_isolation(conn, x, y, water)
    if found is None:
        return {
            "method": "simple",
            "burst_segment": None,
            "note": f"no water pipe within {BURST_SNAP_M:.0f} m of the incident",
            "valves": [],
        }
    await describe_valves(conn, found.valves, x, y)
    to_close = [v for v in found.valves if v.get("state") != "closed"]
    note = (
        "valves on the boundary of the burst pipe's valve segment (cimtwin.spatial."
        "pipelines.isolation.isolate, as WNTR's valve_segments)"
        if found.method == "pipeline_analysis"
        else "valves bounding the stretch of water network around the nearest water pipe (a "
        "walk from it that stops at valves), computed in the incidents module"
    )
    return {
        "method": found.method,
        "note": note,
        "burst_segment": {
            "id": found.segment["id"],
            "subtype": found.segment["subtype"],
            "diameter_mm": found.segment["diameter_mm"],
            "distance_m": round(found.segment["offset_m"], 2),
        },
        "valves": found.valves,
        "valves_to_close": len(to_close),
        "isolated_segments": len(found.segments),
        "isolated_length_m": round(found.length_m, 2),
        "complete": found.complete,
    }
