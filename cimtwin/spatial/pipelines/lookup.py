"""Finding pipes and points for an analysis: by id, nearest to a point, and as GeoJSON
features (CRS84) for the answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from cimtwin.errors import InputError, NotFoundError
from cimtwin.spatial.base import SRID
from cimtwin.spatial.pipelines.shared import (
    NODE,
    SEG,
    fetch_all,
    lonlat,
)

SEGMENT_FEATURES_SQL = f"""
SELECT s.id, s.dataset, s.network, s.subtype, s.link_type, s.source_id, s.diameter_mm,
       s.width_mm, s.height_mm, s.material, s.owner, s.flow_direction, s.length_m,
       s.from_node_id, s.to_node_id, {lonlat("s.geom")}
FROM {SEG} s WHERE s.id = ANY(%s) ORDER BY s.id
"""
NODE_FEATURES_SQL = f"""
SELECT n.id, n.dataset, n.network, n.subtype, n.point_no, n.feature, n.appurtenance,
       n.valve_state, n.ground_elevation_m, {lonlat("n.geom")}
FROM {NODE} n WHERE n.id = ANY(%s) ORDER BY n.id
"""


async def segment_features(
    conn: AsyncConnection,
    ids: Sequence[int],
    extra: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """GeoJSON features (CRS84) of segments, properties plus ``extra[id]``."""
    if not ids:
        return []
    rows = await fetch_all(conn, SEGMENT_FEATURES_SQL, (list(ids),))
    out = []
    for r in rows:
        props = {
            "kind": "segment",
            "dataset": r[1],
            "network": r[2],
            "subtype": r[3],
            "link_type": r[4],
            "source_id": r[5],
            "diameter_mm": r[6],
            "width_mm": r[7],
            "height_mm": r[8],
            "material": r[9],
            "owner": r[10],
            "flow_direction": r[11],
            "length_m": round(r[12], 3),
            "from_node_id": r[13],
            "to_node_id": r[14],
        }
        props.update((extra or {}).get(r[0], {}))
        out.append(
            {
                "type": "Feature",
                "id": f"segment:{r[0]}",
                "geometry": json.loads(r[15]),
                "properties": {"segment_id": r[0], **props},
            }
        )
    return out


async def node_features(
    conn: AsyncConnection,
    ids: Sequence[int],
    extra: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = await fetch_all(conn, NODE_FEATURES_SQL, (list(ids),))
    out = []
    for r in rows:
        props = {
            "kind": "node",
            "dataset": r[1],
            "network": r[2],
            "subtype": r[3],
            "point_no": r[4],
            "feature": r[5],
            "appurtenance": r[6],
            "valve_state": r[7],
            "ground_elevation_m": r[8],
        }
        props.update((extra or {}).get(r[0], {}))
        out.append(
            {
                "type": "Feature",
                "id": f"node:{r[0]}",
                "geometry": json.loads(r[9]),
                "properties": {"node_id": r[0], **props},
            }
        )
    return out


SEGMENT_INFO_SQL = f"""
SELECT id, network, dataset FROM {SEG} WHERE id = %s
"""


async def segment_info(conn: AsyncConnection, seg_id: int) -> tuple[int, str, str] | None:
    rows = await fetch_all(conn, SEGMENT_INFO_SQL, (seg_id,))
    return tuple(rows[0]) if rows else None


NODE_INFO_SQL = f"SELECT id, network, dataset FROM {NODE} WHERE id = %s"


async def node_info(conn: AsyncConnection, node_id: int) -> tuple[int, str, str] | None:
    rows = await fetch_all(conn, NODE_INFO_SQL, (node_id,))
    return tuple(rows[0]) if rows else None


async def nearest_segment(
    conn: AsyncConnection,
    x: float,
    y: float,
    network: str | None = None,
    dataset: str | None = None,
) -> tuple[int, str, str, float] | None:
    """The pipe nearest to (x, y) in the storage CRS: (id, network, dataset, distance m)."""
    where: list[str] = []
    params: dict[str, float | str] = {"x": x, "y": y}
    if network:
        where.append("s.network = %(network)s")
        params["network"] = network
    if dataset:
        where.append("s.dataset = %(dataset)s")
        params["dataset"] = dataset
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    point = f"ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {SRID})"
    rows = await fetch_all(
        conn,
        f"""
        SELECT s.id, s.network, s.dataset, ST_Distance(s.geom, {point})
        FROM {SEG} s {cond} ORDER BY s.geom <-> {point} LIMIT 1""",
        params,
    )
    return tuple(rows[0]) if rows else None


async def nearest_node(
    conn: AsyncConnection,
    x: float,
    y: float,
    network: str | None = None,
) -> tuple[int, str, str, float] | None:
    params: dict[str, Any] = {"x": x, "y": y}
    cond = ""
    if network:
        cond = "WHERE n.network = %(network)s"
        params["network"] = network
    point = f"ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {SRID})"
    rows = await fetch_all(
        conn,
        f"""
        SELECT n.id, n.network, n.dataset, ST_Distance(n.geom, {point})
        FROM {NODE} n {cond} ORDER BY n.geom <-> {point} LIMIT 1""",
        params,
    )
    return tuple(rows[0]) if rows else None


async def resolve_segment(
    conn: AsyncConnection,
    *,
    segment_id: int | None = None,
    point: tuple[float, float] | None = None,
    tolerance_m: float = 10.0,
    network: str | None = None,
    dataset: str | None = None,
) -> tuple[int, str, dict[str, Any] | None]:
    """The segment a request names, or the pipe nearest to its point: (id, network, snap)."""
    if segment_id is not None:
        info = await segment_info(conn, segment_id)
        if info is None:
            raise NotFoundError(f"segment {segment_id} does not exist")
        if dataset and info[2] != dataset:
            raise NotFoundError(
                f"segment {segment_id} is not in dataset {dataset!r} (it is in {info[2]!r})"
            )
        if network and info[1] != network:
            raise InputError(f"segment {segment_id} belongs to network {info[1]}, not {network}")
        return segment_id, info[1], None
    if point is None:
        raise InputError("give a segment id or a point")
    near = await nearest_segment(conn, point[0], point[1], network, dataset)
    if near is None:
        where = " ".join(
            x
            for x in (
                f"of network {network}" if network else "",
                f"in dataset {dataset!r}" if dataset else "",
            )
            if x
        )
        raise InputError(f"there are no pipes {where}".strip())
    if near[3] > tolerance_m:
        raise InputError(
            f"the point is {near[3]:.1f} m from the nearest pipe "
            f"(segment {near[0]}); the tolerance is {tolerance_m:g} m"
        )
    return near[0], near[1], {"segment_id": near[0], "distance_m": round(near[3], 3)}
