"""Planted defects for importer tests: each is listed (file, row or feature, rule, description).

Every defect is planted so it breaks exactly the rule it names where that is possible: the
uphill pipe starts at a head manhole no other pipe touches (so no depth inconsistency appears),
the out-of-range depth sits at a hydrant (one pipe), the dangling and looped lines keep their
original end points referenced by other lines.  Pipeline defects are applied to the row lists
before writing, so the UTF-8 CSV, the GBK CSV and the XLSX carry the same rows.
"""

from __future__ import annotations

from collections import Counter

import geopandas as gpd
import pandas as pd
import shapely

from cimtwin.samples.network import DEPTH_RANGE, LINE_COLUMNS, POINT_COLUMNS
from cimtwin.samples.spec import COUNTY_CODE, substream

P = {c: k for k, c in enumerate(POINT_COLUMNS)}
L = {c: k for k, c in enumerate(LINE_COLUMNS)}
PIPE_FILES = ["pipelines/points_gbk.csv", "pipelines/pipelines.xlsx"]


def plant(
    point_rows: list[list],
    line_rows: list[list],
    components: gpd.GeoDataFrame,
    parcel: gpd.GeoDataFrame,
    building: gpd.GeoDataFrame,
    seed: int,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, list[dict]]:
    """Plant the defects in place (rows) or in copies (frames); returns frames and the list."""
    rng = substream(seed, "dirty")
    defects: list[dict] = []
    pt_row = {r[P["物探点号"]]: k for k, r in enumerate(point_rows)}
    uses: Counter[str] = Counter()
    for r in line_rows:
        uses[r[L["起点点号"]]] += 1
        uses[r[L["终点点号"]]] += 1

    def pick(cands: list[int]) -> int:
        return cands[int(rng.integers(len(cands)))]

    def line_where(cond) -> int:
        return pick([k for k, r in enumerate(line_rows) if cond(r)])

    # 1. a gravity pipe flowing uphill, starting at a head manhole only it touches
    def uphill_ok(r: list) -> bool:
        return r[L["管线小类"]] == "YS" and r[L["流向"]] == 1 and uses[r[L["起点点号"]]] == 1

    k_up = line_where(uphill_ok)
    r = line_rows[k_up]
    ps, pe = point_rows[pt_row[r[L["起点点号"]]]], point_rows[pt_row[r[L["终点点号"]]]]
    inv_end = pe[P["地面高程"]] - r[L["终点埋深"]]
    new_depth = round(ps[P["地面高程"]] - (inv_end - 0.2), 2)  # start invert 0.2 m lower
    lo, hi = DEPTH_RANGE["YS"]
    if not lo <= new_depth <= hi:
        raise RuntimeError("uphill defect would also break the depth range; pick another seed")
    r[L["起点埋深"]] = new_depth
    ps[P["井深"]] = round(new_depth + 0.2, 2)
    uphill = (k_up, r[L["起点点号"]], r[L["终点点号"]])

    # 2. a line whose end point does not exist
    k_miss = line_where(lambda r: r[L["管线小类"]] == "TR" and uses[r[L["终点点号"]]] >= 2)
    ghost = "RQ99999"
    old_end = line_rows[k_miss][L["终点点号"]]
    line_rows[k_miss][L["终点点号"]] = ghost

    # 3. a line whose start equals its end
    k_loop = line_where(
        lambda r: (
            r[L["管线小类"]] == "XX" and uses[r[L["终点点号"]]] >= 2 and uses[r[L["起点点号"]]] >= 2
        )
    )
    line_rows[k_loop][L["终点点号"]] = line_rows[k_loop][L["起点点号"]]

    # 4. a depth out of range: the hydrant end of a hydrant branch (no other pipe there)
    hydrants = {r[P["物探点号"]] for r in point_rows if r[P["附属物"]] == "消防栓"}
    k_deep = line_where(lambda r: r[L["终点点号"]] in hydrants)
    line_rows[k_deep][L["终点埋深"]] = 6.5

    # 5. an unknown material
    k_mat = line_where(lambda r: r[L["管线小类"]] == "GD")
    line_rows[k_mat][L["材质"]] = "铝合金"

    # 6. duplicate point number: a second row right after a straight point, moved 0.8 m
    k_dup = pick(
        [
            k
            for k, r in enumerate(point_rows)
            if r[P["管线小类"]] == "SS" and r[P["特征"]] == "直线点"
        ]
    )
    dup = list(point_rows[k_dup])
    dup[P["X"]] = round(dup[P["X"]] + 0.8, 3)
    point_rows.insert(k_dup + 1, dup)
    dup_no = dup[P["物探点号"]]

    def lrow(k: int) -> int:  # 1-based data row in lines.csv
        return k + 1

    defects += [
        _d(
            "pipelines/points.csv",
            "duplicate_point_no",
            rows=[k_dup + 1, k_dup + 2],
            key=dup_no,
            description=f"物探点号 {dup_no} appears twice (second row moved 0.8 m)",
        ),
        _d(
            "pipelines/lines.csv",
            "line_end_missing",
            rows=[lrow(k_miss)],
            key=ghost,
            description=f"终点点号 {ghost} is not in the point table (was {old_end})",
        ),
        _d(
            "pipelines/lines.csv",
            "gravity_uphill",
            rows=[lrow(uphill[0])],
            key=f"{uphill[1]}-{uphill[2]}",
            description=f"YS pipe {uphill[1]}->{uphill[2]} (流向 1): invert at the start is 0.2 m "
            "below the invert at the end, so it flows uphill",
        ),
        _d(
            "pipelines/lines.csv",
            "line_start_equals_end",
            rows=[lrow(k_loop)],
            key=line_rows[k_loop][L["起点点号"]],
            description="起点点号 equals 终点点号",
        ),
        _d(
            "pipelines/lines.csv",
            "depth_out_of_range",
            rows=[lrow(k_deep)],
            key=line_rows[k_deep][L["终点点号"]],
            description="JP 终点埋深 6.50 m, outside the 1.0-1.5 m range for water mains",
        ),
        _d(
            "pipelines/lines.csv",
            "unknown_material",
            rows=[lrow(k_mat)],
            key="铝合金",
            description="材质 铝合金 is not in the CJJ 61 material dictionary",
        ),
    ]
    for d in defects:
        d["also_in"] = (
            ["pipelines/points_gbk.csv", "pipelines/pipelines.xlsx#管线点"]
            if d["file"].endswith("points.csv")
            else ["pipelines/lines_gbk.csv", "pipelines/pipelines.xlsx#管线段"]
        )

    # 7. a component with an unknown class code
    components = components.copy()
    lamp = components[components["class_cd"] == "0118"].iloc[0]
    bad_id = f"{COUNTY_CODE}9999000001"
    row = {c: lamp[c] for c in components.columns if c != "geometry"}
    row.update({"comp_id": bad_id, "class_cd": "9999", "name": "未知部件"})
    extra = gpd.GeoDataFrame(
        [row], geometry=[shapely.Point(lamp.geometry.x + 1.0, lamp.geometry.y)], crs=components.crs
    )
    components = gpd.GeoDataFrame(
        pd.concat([components, extra[components.columns]], ignore_index=True), crs=components.crs
    )
    defects.append(
        _d(
            "gpkg/components.gpkg#component",
            "unknown_component_class",
            feature=bad_id,
            key="9999",
            description="class_cd 9999 is not in the component class dictionary",
            also_in=["shp/component.shp", "shp/component_nocrs.shp"],
        )
    )

    # 8. a self-intersecting (bow-tie) parcel, one without buildings
    parcel = parcel.copy()
    built = set(building["parcel_cd"])
    k_bow = next((k for k, c in enumerate(parcel["parcel_cd"]) if c not in built), 0)
    x0, y0, x1, y1 = parcel.geometry.iloc[k_bow].bounds
    bow = shapely.MultiPolygon([shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])])
    parcel.loc[parcel.index[k_bow], "geometry"] = bow
    pcode = parcel["parcel_cd"].iloc[k_bow]
    defects.append(
        _d(
            "gpkg/parcels.gpkg#parcel",
            "invalid_geometry",
            feature=pcode,
            key="self_intersection",
            description="parcel polygon is a bow-tie (self-intersecting ring)",
            also_in=["shp/parcel.shp"],
        )
    )
    # 9. a file without a CRS
    defects.append(
        _d(
            "shp/component_nocrs.shp",
            "missing_crs",
            key=".prj",
            description="point components written without a .prj: no CRS declared",
        )
    )
    for n, d in enumerate(defects, start=1):
        d["id"] = f"D{n:02d}"
    return components, parcel, defects


def _d(
    file: str,
    rule: str,
    key: str,
    description: str,
    rows: list[int] | None = None,
    feature: str | None = None,
    also_in: list[str] | None = None,
) -> dict:
    out: dict = {"file": file, "rule": rule, "key": key, "description": description}
    if rows is not None:
        out["rows"] = rows
    if feature is not None:
        out["feature"] = feature
    if also_in is not None:
        out["also_in"] = also_in
    return out
