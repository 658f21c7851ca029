"""Clearance analysis: pipe pairs, and pipes and buildings, closer than GB 50289-2016 allows.

Candidate pairs come from the spatial index (SQL here); the distances are measured
exactly and compared with :func:`.clearance_rules.clearance_rule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection

from cimtwin.spatial.pipelines.clearance_rules import (
    BUILDING,
    BUILDING_ITEM,
    PipeSpec,
    RuleMatch,
    clearance_rule,
    max_rule_value,
    spec_from,
)
from cimtwin.spatial.pipelines.shared import (
    BUILDINGS,
    SEG,
    fetch_all,
    fetch_all_nojit,
    half_h,
    half_w,
    rounded,
    size_text,
    to_lonlat,
    wkb_geom,
    wkb_lonlat,
)

# clearance SQL: candidate pairs found on the GiST index, exact distances computed after
_PIPE_COLS = (
    "{t}.network, {t}.subtype, {t}.diameter_mm, {t}.width_mm, {t}.height_mm, "
    "{t}.pressure_class, {t}.burial, {t}.owner, {t}.dataset"
)


def _scope(t: str, area: bool, networks: bool) -> str:
    cond = [f"{t}.link_type = 'pipe'"]
    if area:
        cond.append(f"ST_Intersects({t}.geom, {wkb_geom('area')})")
    if networks:
        cond.append(f"{t}.network = ANY(%(networks)s)")
    return " AND ".join(cond)


def clearance_pairs_sql(area: bool, networks: bool) -> str:
    """Candidate pipe pairs within ``%(search)s`` m (the GiST index finds them), each pair
    once, with what the distances need. Every pair is a candidate, the same network
    included (GB 50289 has rows such as water over water), except pipes joined at a node:
    they meet by design and do not cross."""
    return f"""
SELECT a.id, {_PIPE_COLS.format(t="a")}, b.id, {_PIPE_COLS.format(t="b")},
       ST_Distance(a.geom, b.geom) AS d, {half_w("a")}, {half_h("a")}, {half_w("b")},
       {half_h("b")}, ST_Intersects(a.geom, b.geom) AS crosses,
       CASE WHEN ST_Intersects(a.geom, b.geom) THEN (
           SELECT array_agg(ARRAY[
               ST_Z(ST_LineInterpolatePoint(a.geom,
                                            ST_LineLocatePoint(ST_Force2D(a.geom), p.geom))),
               ST_Z(ST_LineInterpolatePoint(b.geom,
                                            ST_LineLocatePoint(ST_Force2D(b.geom), p.geom))),
               ST_X(p.geom), ST_Y(p.geom)])
           FROM ST_DumpPoints(ST_Intersection(ST_Force2D(a.geom), ST_Force2D(b.geom))) p)
       END AS zs,
       ST_AsBinary(ST_ClosestPoint(ST_Force2D(a.geom), ST_Force2D(b.geom))),
       CASE WHEN ST_Distance(a.geom, b.geom) < {half_w("a")} + {half_w("b")} THEN ARRAY[
           ST_Z(ST_LineInterpolatePoint(a.geom, ST_LineLocatePoint(ST_Force2D(a.geom),
                ST_ClosestPoint(ST_Force2D(a.geom), ST_Force2D(b.geom))))),
           ST_Z(ST_LineInterpolatePoint(b.geom, ST_LineLocatePoint(ST_Force2D(b.geom),
                ST_ClosestPoint(ST_Force2D(b.geom), ST_Force2D(a.geom)))))]
       END AS z_close
FROM {SEG} a JOIN {SEG} b ON ST_DWithin(a.geom, b.geom, %(search)s) AND b.id <> a.id
WHERE {_scope("a", area, networks)} AND b.link_type = 'pipe'
  AND a.from_node_id NOT IN (b.from_node_id, b.to_node_id)
  AND a.to_node_id NOT IN (b.from_node_id, b.to_node_id)
  AND NOT ({_scope("b", area, networks)} AND b.id < a.id)
ORDER BY a.id, b.id  -- the same pairs every time when the candidate cap is reached
LIMIT %(limit)s
"""


def clearance_buildings_sql(area: bool, networks: bool) -> str:
    return f"""
SELECT a.id, {_PIPE_COLS.format(t="a")}, b.id, b.building_code, b.name,
       ST_Distance(a.geom, b.footprint) AS d, {half_w("a")},
       ST_AsBinary(ST_ClosestPoint(ST_Force2D(a.geom), b.footprint))
FROM {SEG} a JOIN {BUILDINGS} b ON ST_DWithin(a.geom, b.footprint, %(search)s)
WHERE {_scope("a", area, networks)}
ORDER BY a.id, b.id
LIMIT %(limit)s
"""


MAX_CLEARANCE_CANDIDATES = 200_000


def _pipe_json(seg_id: int, p: PipeSpec, owner: str | None, dataset: str | None) -> dict:
    return {
        "segment_id": seg_id,
        "network": p.network,
        "subtype": p.subtype,
        "item": p.item_name,
        "size": size_text(p.diameter_mm, p.width_mm, p.height_mm),
        "pressure_class": p.pressure_class,
        "burial": p.burial,
        "owner": owner,
        "dataset": dataset,
    }


def _pair_key(kind: str, item_a: str, item_b: str) -> tuple[str, str, str]:
    """A pair's tally key: its type and both items, in sorted order."""
    lo, hi = sorted((item_a, item_b))
    return kind, lo, hi


@lru_cache(maxsize=4096)
def _rule_for(kind: str, p: PipeSpec, q: PipeSpec) -> RuleMatch | None:
    return clearance_rule(kind, p, q)


async def clearance_analysis(
    conn: AsyncConnection,
    *,
    area: bytes | None = None,
    networks: Sequence[str] | None = None,
    buildings: bool = True,
    max_results: int = 1000,
) -> dict[str, Any]:
    """Pipe pairs, and pipes and buildings, closer than GB 50289-2016 allows: horizontally
    between outer walls where the pipes do not cross, vertically between outer walls at
    crossings. Pairs of one network are compared too (a distribution pipe crossing a main);
    pipes joined at a node are not a pair; pairs the table has no row for are listed apart."""
    has_area, has_nets = area is not None, bool(networks)
    params: dict[str, Any] = {
        "area": area,
        "networks": list(networks or []),
        "limit": MAX_CLEARANCE_CANDIDATES,
    }
    half_sql = f"""SELECT coalesce(max(GREATEST({half_w("a")}, {half_h("a")})), 0) FROM {SEG} a
        {f"WHERE ST_DWithin(a.geom, {wkb_geom('area')}, 50)" if has_area else ""}"""
    max_half = float((await fetch_all(conn, half_sql, params))[0][0] or 0.0)
    pipe_reach = max(max_rule_value("horizontal", False), max_rule_value("vertical", False))
    params["search"] = pipe_reach + 2 * max_half + 0.001
    violations: list[dict[str, Any]] = []
    # pairs by (type, item, item): compared with a rule, and left out for want of one
    compared: dict[tuple[str, str, str], int] = {}
    no_rule: dict[tuple[str, str, str], int] = {}
    checked = {"pipe_pairs": 0, "pipe_building_pairs": 0}
    rows = await fetch_all_nojit(conn, clearance_pairs_sql(has_area, has_nets), params)
    truncated = len(rows) >= MAX_CLEARANCE_CANDIDATES
    for r in rows:
        a_id, p, a_owner, a_ds = r[0], spec_from(r[1:8]), r[8], r[9]
        b_id, q, b_owner, b_ds = r[10], spec_from(r[11:18]), r[18], r[19]
        d, aw, ah, bw, bh, crosses, zs, closest, z_close = r[20:29]
        checked["pipe_pairs"] += 1
        where: list[float] | None
        if crosses and zs:
            kind = "vertical"
            best = min(zs, key=lambda z: abs(z[0] - z[1]))
            measured = abs(best[0] - best[1]) - ah - bh
            where = to_lonlat(best[2], best[3])
            extra = {"elevation_a_m": rounded(best[0]), "elevation_b_m": rounded(best[1])}
        elif z_close is not None and None not in z_close:
            # the outlines overlap in plan though the centre lines do not meet (one pipe ends
            # right at the other): one passes over the other, a vertical question
            kind = "vertical"
            measured = abs(z_close[0] - z_close[1]) - ah - bh
            where = wkb_lonlat(closest)
            extra = {
                "elevation_a_m": rounded(z_close[0]),
                "elevation_b_m": rounded(z_close[1]),
                "centre_distance_m": rounded(d),
            }
        else:
            kind = "horizontal"
            measured = d - aw - bw
            where = wkb_lonlat(closest)
            extra = {"centre_distance_m": rounded(d)}
        match = _rule_for(kind, p, q)
        key = _pair_key(kind, p.item_name, q.item_name)
        tally = no_rule if match is None else compared
        tally[key] = tally.get(key, 0) + 1
        if match is None:
            continue
        if measured < match.required_m - 1e-6:
            violations.append(
                {
                    "type": kind,
                    "pair": "pipe-pipe",
                    "a": _pipe_json(a_id, p, a_owner, a_ds),
                    "b": _pipe_json(b_id, q, b_owner, b_ds),
                    "measured_m": rounded(measured),
                    "required_m": match.required_m,
                    "shortfall_m": rounded(match.required_m - measured),
                    **extra,
                    "rule": match.rule.as_json(),
                    "rows_considered": sorted({x.row for x in match.considered}),
                    "assumptions": match.assumptions,
                    "location": where,
                }
            )
    if buildings:
        params["search"] = max_rule_value("horizontal", True) + max_half + 0.001
        rows = await fetch_all_nojit(conn, clearance_buildings_sql(has_area, has_nets), params)
        truncated = truncated or len(rows) >= MAX_CLEARANCE_CANDIDATES
        house = PipeSpec(BUILDING)
        for r in rows:
            a_id, p, a_owner, a_ds = r[0], spec_from(r[1:8]), r[8], r[9]
            b_id, code, name, d, aw, closest = r[10:16]
            checked["pipe_building_pairs"] += 1
            match = _rule_for("horizontal", p, house)
            key = _pair_key("horizontal", p.item_name, BUILDING_ITEM)
            tally = no_rule if match is None else compared
            tally[key] = tally.get(key, 0) + 1
            if match is None:
                continue
            measured = d - aw
            if measured < match.required_m - 1e-6:
                violations.append(
                    {
                        "type": "horizontal",
                        "pair": "pipe-building",
                        "a": _pipe_json(a_id, p, a_owner, a_ds),
                        "b": {
                            "building_id": b_id,
                            "building_code": code,
                            "name": name,
                            "item": BUILDING_ITEM,
                        },
                        "measured_m": rounded(measured),
                        "required_m": match.required_m,
                        "shortfall_m": rounded(match.required_m - measured),
                        "centre_distance_m": rounded(d),
                        "rule": match.rule.as_json(),
                        "rows_considered": sorted({x.row for x in match.considered}),
                        "assumptions": match.assumptions,
                        "location": wkb_lonlat(closest),
                    }
                )
    violations.sort(key=lambda v: (-v["shortfall_m"], v["a"]["segment_id"]))
    by_status: dict[str, int] = {}
    for v in violations:
        st = (
            "unverified"
            if v["rule"]["unverified"]
            else ("verified" if v["rule"]["verified"] else "other")
        )
        by_status[st] = by_status.get(st, 0) + 1
    return {
        "standard": "GB 50289-2016 (tables 4.1.9 horizontal, 4.1.14 vertical), as shipped in "
        "cimtwin/reference/gb50289_2016_clearances.csv",
        "method": "candidate pairs from the spatial index, then exact distances: horizontal = "
        "2D distance between centre lines minus both half widths (pipes whose "
        "outlines do not meet in plan; buildings: distance to the footprint minus "
        "the pipe's half width); vertical = elevation difference of the centre lines "
        "at the crossing (or, where the outlines overlap in plan without the centre "
        "lines crossing, at the closest points) minus both half heights; nominal "
        "sizes stand for outer walls; pipes joined at a node are not compared",
        "violations": violations[:max_results],
        "counts": {
            "violations": len(violations),
            "horizontal": sum(v["type"] == "horizontal" for v in violations),
            "vertical": sum(v["type"] == "vertical" for v in violations),
            "by_rule_status": by_status,
            **checked,
        },
        "checked": [
            {"type": k[0], "item_a": k[1], "item_b": k[2], "pairs": n}
            for k, n in sorted(compared.items())
        ],
        "no_rule": [
            {
                "type": k[0],
                "item_a": k[1],
                "item_b": k[2],
                "pairs": n,
                "note": "the shipped GB 50289 table has no row for this pair: not checked",
            }
            for k, n in sorted(no_rule.items())
        ],
        "truncated": truncated or len(violations) > max_results,
    }
