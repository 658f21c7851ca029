"""The viewer's search box: one text, the twin's named things.

    GET /search?q=...&limit=...

Buildings by building code, address or name; work grids by code or name; parcels by parcel
code; pipeline points by point number (物探点号). Exact matches (case-insensitive) come
first, then prefixes, then substrings; the text is matched literally (``%``, ``_`` and ``\\``
are escaped, not wildcards). Each result names its OGC API Features collection and item id,
a label, a position (lon, lat in CRS84) to fly to and, for polygons, their bbox.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cimtwin.api.answers import SearchAnswer, answer
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.errors import invalid
from cimtwin.api.geojson import JSON, dumps
from cimtwin.spatial.sql_toolkit import T, rows

router = APIRouter(tags=["search"], dependencies=[Depends(require_read)])

MAX_Q = 100
DEFAULT_LIMIT = 10
MAX_LIMIT = 50


def like_escape(text: str) -> str:
    """``text`` for ILIKE ... ESCAPE '\\' that matches only itself."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _rank(fields: tuple[str, ...]) -> str:
    """0 exact, 1 prefix, 2 substring (the best over ``fields``), NULL when none matches.
    ``fields`` are column expressions written in this module, never input."""
    parts = [
        f"CASE WHEN lower({f}) = lower(%(q)s) THEN 0 "
        f"WHEN {f} ILIKE %(prefix)s ESCAPE '\\' THEN 1 "
        f"WHEN {f} ILIKE %(inner)s ESCAPE '\\' THEN 2 END"
        for f in fields
    ]
    return parts[0] if len(parts) == 1 else f"LEAST({', '.join(parts)})"


def _where(fields: tuple[str, ...]) -> str:
    return " OR ".join(f"{f} ILIKE %(inner)s ESCAPE '\\'" for f in fields)


def _kind(
    kind: str, collection: str, table: str, item_id: str, label: str, geom: str,
    fields: tuple[str, ...], polygon: bool, order: int,
) -> str:  # fmt: skip
    """One kind's best matches: rank, kind order, label, then its own LIMIT so the union
    stays small whatever the tables hold."""
    bbox = (
        "(SELECT ARRAY[ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)] "
        f"FROM (SELECT ST_Transform({geom}, 4326)::box2d AS b) e)"
        if polygon
        else "NULL::float8[]"
    )
    return (
        f"(SELECT {_rank(fields)} AS rank, {order} AS ord, '{kind}' AS kind, "
        f"'{collection}' AS collection, ({item_id})::text AS id, {label} AS label, "
        f"ST_AsGeoJSON(ST_Transform(ST_PointOnSurface(ST_Force2D({geom})), 4326), 7) AS position, "
        f"{bbox} AS bbox "
        f"FROM {table} WHERE {_where(fields)} "
        f"ORDER BY 1, length({label}), {label} LIMIT %(limit)s)"
    )


SEARCH_SQL = (
    "SELECT kind, collection, id, label, position, bbox FROM ("
    + " UNION ALL ".join(
        (
            _kind(
                "building",
                "buildings",
                T.building,
                "id",
                "concat_ws(' ', building_code, name, address)",
                "footprint",
                ("building_code", "address", "name"),
                True,
                0,
            ),
            _kind(
                "grid",
                "grids",
                T.work_grid,
                "code",
                "concat_ws(' ', code, name)",
                "geom",
                ("code", "name"),
                True,
                1,
            ),
            _kind(
                "parcel",
                "parcels",
                T.parcel,
                "id",
                "concat_ws(' ', parcel_code, land_use)",
                "geom",
                ("parcel_code",),
                True,
                2,
            ),
            _kind(
                "pipeline_point",
                "pipeline_points",
                T.pipeline_node,
                "id",
                "concat_ws(' ', point_no, network, coalesce(appurtenance, feature))",
                "geom",
                ("point_no",),
                False,
                3,
            ),
        )
    )
    + ") found ORDER BY rank, ord, length(label), label, id LIMIT %(limit)s"
)


@router.get(
    "/search",
    summary="Find buildings, grids, parcels and pipe points by code or name",
    responses=answer(SearchAnswer, "the matches, best first"),
)
async def search(
    conn: Conn,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_Q,
            description="building code, address or name; grid code or name; parcel code; "
            "pipe point number. Taken literally (no wildcards), case-insensitive",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response:
    """Exact matches first, then prefixes, then substrings; within each, buildings, grids,
    parcels, then pipe points, shorter labels first."""
    text = q.strip()
    if not text:
        raise invalid("q: give some text to search for")
    pattern = like_escape(text)
    found = await rows(
        conn,
        SEARCH_SQL,
        {"q": text, "prefix": pattern + "%", "inner": "%" + pattern + "%", "limit": limit},
    )
    results = []
    for kind, collection, item_id, label, position, bbox in found:
        point = json.loads(position)["coordinates"] if position else None
        item: dict = {
            "kind": kind,
            "collection": collection,
            "id": int(item_id) if collection != "grids" else item_id,
            "label": label,
            "position": point,
        }
        if bbox is not None:
            item["bbox"] = [round(v, 7) for v in bbox]
        results.append(item)
    return Response(
        dumps({"q": text, "numberReturned": len(results), "results": results}), media_type=JSON
    )
