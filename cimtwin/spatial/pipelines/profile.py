"""Longitudinal profiles: the chain of pipes from a start pipe (with the flow in gravity
networks, straight through in pressure networks) with elevations, cover and slopes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from cimtwin.errors import NotFoundError
from cimtwin.spatial.pipelines.graph import NetworkGraph, network_graph
from cimtwin.spatial.pipelines.lookup import (
    segment_info,
)
from cimtwin.spatial.pipelines.shared import (
    NODE,
    SEG,
    fetch_all,
    half_h,
    lonlat,
    rounded,
    size_text,
)

#: a pressure-network profile goes straight through a junction only within this deflection
STRAIGHT_MAX_DEG = 45.0


# --- profiles ------------------------------------------------------------------------------------


def _deflection_deg(g: NetworkGraph, a: int, b: int, c: int) -> float:
    """Turning angle at node b on the way a -> b -> c (0 = straight on)."""
    d1 = g.node_xy[b] - g.node_xy[a]
    d2 = g.node_xy[c] - g.node_xy[b]
    n1, n2 = float(np.hypot(*d1)), float(np.hypot(*d2))
    if not (n1 > 0 and n2 > 0) or not (math.isfinite(n1) and math.isfinite(n2)):
        return 0.0
    cos = float(np.dot(d1, d2)) / (n1 * n2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def profile_chain(
    g: NetworkGraph,
    seg: int,
    *,
    reverse: bool = False,
    max_segments: int = 100,
) -> tuple[list[tuple[int, bool]], str]:
    """The chain of segments of a longitudinal profile starting at ``seg``: (segment index,
    walked from->to) pairs.

    Gravity networks follow the flow (against it with ``reverse``), taking the largest pipe at
    a junction, then the straightest. Pressure networks walk from the start pipe's from-node to
    its to-node (the other way with ``reverse``), through every plain point, and through a
    junction along the straightest pipe when it turns by at most ``STRAIGHT_MAX_DEG``.
    """
    chain: list[tuple[int, bool]] = []
    visited: set[int] = set()
    s = seg
    directed_start = g.directed and g.seg_flow[s] != 0
    forward = (g.seg_flow[s] > 0) != reverse if directed_start else not reverse
    while True:
        chain.append((s, forward))
        visited.add(s)
        if len(chain) >= max_segments:
            return chain, "max_segments reached"
        a, b = (
            (int(g.seg_from[s]), int(g.seg_to[s]))
            if forward
            else (int(g.seg_to[s]), int(g.seg_from[s]))
        )
        options = []
        for t in g.incident(b).tolist():
            if t in visited:
                continue
            nxt = g.other_end(t, b)
            if g.directed and g.seg_flow[t] != 0:
                goes_on = (g.upstream_node(t) == b) != reverse
                if not goes_on:
                    continue
            angle = _deflection_deg(g, a, b, nxt)
            options.append((t, nxt, angle))
        if not options:
            if any(p in g.node_kind(b) for p in ("出水口", "排放口")):
                return chain, "outfall"
            if len(g.incident(b)) <= 1:
                return chain, "end of the network"
            return chain, (
                "no pipe continues the flow"
                if g.directed
                else "only pipes already in the profile go on"
            )
        if g.directed:
            t, nxt, angle = min(options, key=lambda o: (-g.seg_size[o[0]], o[2]))
        else:
            t, nxt, angle = min(options, key=lambda o: o[2])
            if len(g.incident(b)) > 2 and angle > STRAIGHT_MAX_DEG:
                return chain, (
                    f"junction without a straight continuation (> {STRAIGHT_MAX_DEG:g} deg)"
                )
        forward = int(g.seg_from[t]) == b
        s = t


PROFILE_SEGMENTS_SQL = f"""
SELECT s.id, s.network, s.subtype, s.diameter_mm, s.width_mm, s.height_mm, s.material,
       s.depth_ref, s.flow_direction, ST_Length(ST_Force2D(s.geom)),
       ST_Z(ST_StartPoint(s.geom)), ST_Z(ST_EndPoint(s.geom)), {half_h("s")},
       s.from_node_id, s.to_node_id, na.ground_elevation_m, nb.ground_elevation_m,
       na.point_no, nb.point_no, {lonlat("s.geom")}
FROM {SEG} s JOIN {NODE} na ON na.id = s.from_node_id JOIN {NODE} nb ON nb.id = s.to_node_id
WHERE s.id = ANY(%s)
"""


async def profile_analysis(
    conn: AsyncConnection,
    segment_id: int,
    *,
    reverse: bool = False,
    max_segments: int = 100,
) -> dict[str, Any]:
    """Longitudinal profile along the chain of pipes that starts at ``segment_id``."""
    info = await segment_info(conn, segment_id)
    if info is None:
        raise NotFoundError(f"segment {segment_id} does not exist")
    g = await network_graph(conn, info[1])
    s = g.seg_index(segment_id)
    if s is None:
        raise NotFoundError(f"segment {segment_id} does not exist")
    chain, why = profile_chain(g, s, reverse=reverse, max_segments=max_segments)
    ids = [int(g.seg_id[x]) for x, _ in chain]
    rows = {r[0]: r for r in await fetch_all(conn, PROFILE_SEGMENTS_SQL, (ids,))}
    chainage = 0.0
    out: list[dict[str, Any]] = []
    ground: list[dict[str, Any]] = []
    geoms: list[dict[str, Any]] = []
    for (_, fwd), sid in zip(chain, ids, strict=True):
        r = rows[sid]
        (net, sub, dia, wid, hei, mat, ref, flow, l2d, za, zb, h, na, nb, ga, gb, pa, pb, gj) = r[
            1:
        ]
        if not fwd:
            za, zb, na, nb, ga, gb, pa, pb = zb, za, nb, na, gb, ga, pb, pa
        seg = {
            "segment_id": sid,
            "from_node_id": na,
            "to_node_id": nb,
            "from_point_no": pa,
            "to_point_no": pb,
            "walked": "from->to" if fwd else "to->from",
            "network": net,
            "subtype": sub,
            "size": size_text(dia, wid, hei),
            "diameter_mm": dia,
            "width_mm": wid,
            "height_mm": hei,
            "material": mat,
            "chainage_start_m": rounded(chainage),
            "chainage_end_m": rounded(chainage + l2d),
            "length_m": rounded(l2d),
            "centre_start_m": rounded(za),
            "centre_end_m": rounded(zb),
            "top_start_m": rounded(za + h),
            "top_end_m": rounded(zb + h),
            "bottom_start_m": rounded(za - h),
            "bottom_end_m": rounded(zb - h),
            "ground_start_m": rounded(ga),
            "ground_end_m": rounded(gb),
            "cover_start_m": rounded(ga - za - h) if ga is not None else None,
            "cover_end_m": rounded(gb - zb - h) if gb is not None else None,
            "slope_permille": rounded(1000 * (zb - za) / l2d, 2) if l2d else None,
        }
        out.append(seg)
        if not ground:
            ground.append(
                {
                    "chainage_m": rounded(chainage),
                    "elevation_m": rounded(ga),
                    "node_id": na,
                    "point_no": pa,
                }
            )
        chainage += l2d
        ground.append(
            {
                "chainage_m": rounded(chainage),
                "elevation_m": rounded(gb),
                "node_id": nb,
                "point_no": pb,
            }
        )
        geoms.append(
            {
                "type": "Feature",
                "id": f"segment:{sid}",
                "geometry": json.loads(gj),
                "properties": {"segment_id": sid, "chainage_start_m": seg["chainage_start_m"]},
            }
        )
    return {
        "network": info[1],
        "start_segment_id": segment_id,
        "mode": ("against the flow" if reverse else "with the flow")
        if g.directed
        else "straight through",
        "stopped": why,
        "length_m": rounded(chainage),
        "segments": out,
        "ground_line": {
            "source": "ground elevations of the survey points along the chain",
            "points": ground,
        },
        "features": {"type": "FeatureCollection", "features": geoms},
    }
