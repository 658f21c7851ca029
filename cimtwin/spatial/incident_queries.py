"""Queries on incidents for the API: create, read, list, edit with a checked status workflow
(the dispatch context around one incident is :mod:`cimtwin.spatial.incident_context`).

Status workflow: reported -> dispatched -> in_progress -> resolved -> closed, one step at a
time; the only way back is reopening a resolved incident (resolved -> in_progress).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from cimtwin.db.layout import county_of
from cimtwin.errors import ConflictError
from cimtwin.settings import get_settings
from cimtwin.spatial.admin_queries import LOCATE_SQL
from cimtwin.spatial.base import SRID
from cimtwin.spatial.incident import FIRST_STATUS, TRANSITIONS, WORKFLOW_TEXT
from cimtwin.spatial.sql_toolkit import T, geojson_text, one, one_row, rows

COLUMNS = (
    "external_id",
    "incident_type",
    "severity",
    "status",
    "title",
    "description",
    "reported_at",
    "updated_at",
    "elevation_m",
    "grid_code",
    "attributes",
)
SELECT = (
    f"SELECT i.id, {geojson_text('i.geom')}, "
    + ", ".join(f"i.{c}" for c in COLUMNS)
    + f", ST_X(i.geom), ST_Y(i.geom) FROM {T.incident} i"
)
POINT = f"ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {SRID})"


def check_transition(old: str, new: str) -> None:
    if new == old:
        return
    allowed = TRANSITIONS.get(old, ())
    if new not in allowed:
        nxt = " or ".join(allowed) if allowed else "nothing (closed is final)"
        raise ConflictError(
            f"status cannot go from {old!r} to {new!r}; from {old!r} it may "
            f"go to {nxt} ({WORKFLOW_TEXT})"
        )


async def grid_at(conn: AsyncConnection, x: float, y: float) -> str | None:
    row = await one(conn, LOCATE_SQL, (x, y))
    return row[0] if row else None


# --- create, read, list, edit ---------------------------------------------------------------


async def create_incident(conn: AsyncConnection, values: dict[str, Any], x: float, y: float) -> int:
    """Insert an incident at (x, y) in the storage CRS, with its grid; returns its id."""
    from psycopg.types.json import Jsonb

    grid = await grid_at(conn, x, y)
    row = await one(
        conn,
        f"""
        INSERT INTO {T.incident} (external_id, incident_type, severity, status, title,
            description, reported_at, updated_at, elevation_m, grid_code, county_code,
            attributes, geom)
        VALUES (%(external_id)s, %(incident_type)s, %(severity)s, %(status)s, %(title)s,
            %(description)s, coalesce(%(reported_at)s, now()), now(), %(elevation_m)s,
            %(grid)s, %(county)s, %(attributes)s, {POINT})
        RETURNING id""",
        {
            **values,
            "grid": grid,
            # outside every grid: the twin's own county (the district key is never NULL)
            "county": county_of(grid) or get_settings().county_code,
            "x": x,
            "y": y,
            "status": FIRST_STATUS,
            "attributes": Jsonb(values.get("attributes") or {}),
        },
    )
    assert row is not None  # INSERT ... RETURNING gives the row
    return row[0]


async def external_id_taken(
    conn: AsyncConnection, external_id: str, other_than: int | None = None
) -> bool:
    row = await one(conn, f"SELECT id FROM {T.incident} WHERE external_id = %s", (external_id,))
    return row is not None and row[0] != other_than


async def get_incident(conn: AsyncConnection, incident_id: int) -> tuple | None:
    return await one(conn, SELECT + " WHERE i.id = %s", (incident_id,))


@dataclass
class IncidentFilter:
    area_wkb: bytes | None = None
    statuses: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


async def list_incidents(conn: AsyncConnection, f: IncidentFilter) -> tuple[list[tuple], int]:
    conds: list[str] = []
    params: list[Any] = []
    if f.area_wkb is not None:
        conds.append(f"ST_Intersects(i.geom, ST_GeomFromWKB(%s, {SRID}))")
        params.append(f.area_wkb)
    if f.statuses:
        conds.append("i.status = ANY(%s)")
        params.append(f.statuses)
    if f.types:
        conds.append("i.incident_type = ANY(%s)")
        params.append(f.types)
    if f.since is not None:
        conds.append("i.reported_at >= %s")
        params.append(f.since)
    if f.until is not None:
        conds.append("i.reported_at < %s")
        params.append(f.until)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    found = await rows(
        conn,
        SELECT + where + " ORDER BY i.reported_at DESC, i.id DESC LIMIT %s OFFSET %s",
        [*params, f.limit, f.offset],
    )
    if f.offset == 0 and len(found) < f.limit:
        return found, len(found)
    total = await one_row(conn, f"SELECT count(*) FROM {T.incident} i{where}", params)
    return found, total[0]


EDITABLE = (
    "incident_type",
    "severity",
    "status",
    "title",
    "description",
    "elevation_m",
    "attributes",
    "external_id",
    "reported_at",
)


async def update_incident(
    conn: AsyncConnection, incident_id: int, changes: dict[str, Any], xy: tuple[float, float] | None
) -> dict[str, Any] | None:
    """Apply ``changes`` (and a move to ``xy``, which reassigns the grid) in one transaction.

    Returns {"old_status", "grid_code"} or None when the incident does not exist; raises
    :class:`~cimtwin.errors.ConflictError` for a status change the workflow does not allow."""
    from psycopg.types.json import Jsonb

    async with conn.transaction():
        row = await one(
            conn,
            f"SELECT status, grid_code FROM {T.incident} WHERE id = %s FOR UPDATE",
            (incident_id,),
        )
        if row is None:
            return None
        old_status, grid = row
        if "status" in changes:
            check_transition(old_status, changes["status"])
        sets: list[str] = ["updated_at = now()"]
        params: dict[str, Any] = {"id": incident_id}
        for name in EDITABLE:
            if name in changes:
                value = changes[name]
                sets.append(f"{name} = %({name})s")
                params[name] = Jsonb(value or {}) if name == "attributes" else value
        if xy is not None:
            grid = await grid_at(conn, *xy)
            # a move into another county changes the district key (a Citus cluster would
            # refuse it: docs/scaling.md); outside every grid the incident keeps its county
            sets += [f"geom = {POINT}", "grid_code = %(grid)s"]
            params.update(x=xy[0], y=xy[1], grid=grid)
            if grid is not None:
                sets.append("county_code = %(county)s")
                params["county"] = county_of(grid)
        await conn.execute(f"UPDATE {T.incident} SET {', '.join(sets)} WHERE id = %(id)s", params)
    return {"old_status": old_status, "grid_code": grid}
