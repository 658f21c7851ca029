"""Parcels (地块) with GB 50137 land use and planning controls, and the buildings on them.

Each block (minus half the widths of its bounding roads) is cut into 1-4 rectangular parcels;
buildings are placed in disjoint slots inside a setback, so footprints never overlap and never
leave their parcel.  Height, floors and floor area follow the use (towers for housing, low
schools), and never exceed the parcel's height limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from cimtwin.reference import land_use_classes
from cimtwin.samples import names
from cimtwin.samples.layout import Lattice, Terrain, round_rect
from cimtwin.samples.spec import (
    HALL_FLOOR_AREA,
    HALL_HEIGHT,
    HALL_NS,
    HALL_WE,
    STORAGE_EPSG,
    substream,
)

NEAR_STATION = 700.0  # m: business uses dominate inside this radius
USE_WEIGHTS_NEAR = {
    "B2": 0.32,
    "B1": 0.18,
    "R2": 0.22,
    "G1": 0.1,
    "A3": 0.05,
    "A5": 0.03,
    "U1": 0.03,
    "S4": 0.03,
    "A1": 0.04,
}
USE_WEIGHTS_FAR = {
    "R2": 0.46,
    "B1": 0.11,
    "B2": 0.07,
    "A3": 0.08,
    "G1": 0.09,
    "A5": 0.03,
    "U1": 0.04,
    "M1": 0.08,
    "S4": 0.02,
    "A1": 0.02,
}


@dataclass(frozen=True)
class UseRule:
    """How buildings look on a parcel of one land use."""

    use: str  # building use written to the building layer
    count: tuple[int, int]  # buildings per parcel (inclusive)
    width: tuple[float, float]  # footprint along the parcel's long axis
    depth: tuple[float, float]  # footprint across it
    floors: tuple[int, int]
    storey: tuple[float, float]
    ug: tuple[int, int]
    far: tuple[float, float]
    h_limit: tuple[float, ...]
    years: tuple[int, int]


RULES: dict[str, UseRule] = {
    "R2": UseRule(
        "residential",
        (2, 5),
        (24, 32),
        (18, 26),
        (18, 45),
        (3.0, 3.0),
        (1, 3),
        (2.5, 4.5),
        (100.0, 120.0, 150.0),
        (1998, 2023),
    ),
    "B2": UseRule(
        "office",
        (1, 3),
        (35, 55),
        (30, 45),
        (12, 60),
        (4.0, 4.5),
        (2, 4),
        (4.0, 8.0),
        (150.0, 200.0, 250.0),
        (2008, 2024),
    ),
    "B1": UseRule(
        "commercial",
        (1, 2),
        (50, 90),
        (40, 70),
        (3, 8),
        (4.5, 4.5),
        (1, 3),
        (2.0, 5.0),
        (50.0, 80.0, 100.0),
        (2003, 2023),
    ),
    "A1": UseRule(
        "government",
        (1, 2),
        (40, 60),
        (25, 35),
        (5, 12),
        (3.6, 4.0),
        (1, 2),
        (1.5, 3.0),
        (50.0, 60.0),
        (2000, 2020),
    ),
    "A3": UseRule(
        "education",
        (2, 4),
        (50, 70),
        (14, 18),
        (4, 6),
        (3.6, 3.9),
        (0, 1),
        (0.8, 1.5),
        (24.0, 30.0),
        (2003, 2021),
    ),
    "A5": UseRule(
        "medical",
        (1, 3),
        (40, 70),
        (25, 40),
        (6, 16),
        (4.0, 4.0),
        (1, 2),
        (1.5, 2.5),
        (60.0, 80.0),
        (2005, 2022),
    ),
    "G1": UseRule(
        "public",
        (0, 1),
        (10, 15),
        (8, 12),
        (1, 2),
        (3.6, 3.6),
        (0, 0),
        (0.02, 0.05),
        (8.0, 10.0),
        (2010, 2022),
    ),
    "U1": UseRule(
        "utility",
        (1, 1),
        (25, 40),
        (20, 30),
        (2, 3),
        (4.5, 4.5),
        (0, 1),
        (0.5, 1.0),
        (24.0,),
        (2000, 2020),
    ),
    "S4": UseRule(
        "transport",
        (1, 2),
        (30, 60),
        (15, 25),
        (1, 3),
        (4.5, 4.5),
        (0, 1),
        (0.3, 0.8),
        (24.0,),
        (2010, 2020),
    ),
    "M1": UseRule(
        "industrial",
        (2, 4),
        (40, 70),
        (25, 40),
        (4, 10),
        (4.5, 4.5),
        (0, 1),
        (2.0, 3.5),
        (50.0, 60.0),
        (1995, 2018),
    ),
}
SUFFIX = {
    "residential": ("花园", "苑", "家园", "雅居"),
    "office": ("大厦", "中心", "国际"),
    "commercial": ("广场", "商业中心", "购物公园"),
    "government": ("办公楼",),
    "education": ("小学", "中学", "实验学校"),
    "medical": ("医院",),
    "public": ("公园管理用房",),
    "utility": ("110kV变电站",),
    "transport": ("公交首末站",),
    "industrial": ("科技园",),
}


@dataclass
class LandUse:
    parcel: gpd.GeoDataFrame
    building: gpd.GeoDataFrame


def _split(
    rect: tuple[float, float, float, float], k: int, rng: np.random.Generator
) -> list[tuple[float, float, float, float]]:
    """Cut a rectangle into k (1-4) rectangles along its long axis (2x2 for four)."""
    x0, y0, x1, y1 = rect
    if k == 1:
        return [rect]
    if k == 4:
        xm = round(x0 + (x1 - x0) * rng.uniform(0.42, 0.58), 3)
        ym = round(y0 + (y1 - y0) * rng.uniform(0.42, 0.58), 3)
        return [(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)]
    cuts = [p / k + rng.uniform(-0.06, 0.06) for p in range(1, k)]
    if x1 - x0 >= y1 - y0:
        c = [x0] + [round(x0 + (x1 - x0) * f, 3) for f in cuts] + [x1]
        return [(c[n], y0, c[n + 1], y1) for n in range(k)]
    c = [y0] + [round(y0 + (y1 - y0) * f, 3) for f in cuts] + [y1]
    return [(x0, c[n], x1, c[n + 1]) for n in range(k)]


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _address(
    lat: Lattice, block: tuple[int, int, int, int], rect: tuple[float, float, float, float]
) -> tuple[str, str]:
    """(road name, 路名+号 address) from the first block side the parcel touches (S, W, N, E)."""
    i0, j0, i1, j1 = block
    net = lat.net_rect(i0, j0, i1, j1)
    mx, my = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    if rect[1] == net[1]:
        road, num = lat.ew_roads[j0], int((mx - lat.xs[0]) // 20) * 2 + 1
    elif rect[0] == net[0]:
        road, num = lat.ns_roads[i0], int((my - lat.ys[0]) // 20) * 2 + 2
    elif rect[3] == net[3]:
        road, num = lat.ew_roads[j1], int((mx - lat.xs[0]) // 20) * 2 + 2
    else:
        road, num = lat.ns_roads[i1], int((my - lat.ys[0]) // 20) * 2 + 1
    return road.name, f"{road.name}{num}号"


def _controls(rule: UseRule, rng: np.random.Generator, near: bool) -> tuple[float, float]:
    far = round(float(rng.uniform(*rule.far)), 1 if rule.far[1] >= 1 else 2)
    limits = rule.h_limit
    h = float(limits[int(rng.integers(len(limits)))])
    if near and rule.use == "office":
        far, h = round(far * 1.2, 1), max(h, 200.0)
    return far, h


def build_landuse(lat: Lattice, terrain: Terrain, seed: int) -> LandUse:
    """Parcels for every block and buildings on them, the station hall included."""
    rng = substream(seed, "landuse")
    brng = substream(seed, "buildings")
    codes = land_use_classes()
    spec = lat.spec
    p_rows: list[tuple] = []
    b_rows: list[tuple] = []

    county = lat.county.code

    def parcel_code() -> str:
        return f"DK{county}{len(p_rows) + 1:06d}"

    def building_code() -> str:
        return f"JZ{county}{len(b_rows) + 1:07d}"

    def add_building(
        rect: tuple[float, float, float, float],
        name: str,
        address: str,
        use: str,
        floors: int,
        storey: float,
        ug: int,
        year: int,
        pcode: str,
        floor_area: float | None = None,
        height: float | None = None,
    ) -> None:
        x0, y0, x1, y1 = rect
        fp = (x1 - x0) * (y1 - y0)
        area = round(fp * floors, 1) if floor_area is None else floor_area
        residents = None
        if use == "residential":
            units = round(area / float(brng.uniform(85.0, 110.0)))
            residents = int(round(units * 2.8))
        b_rows.append(
            (
                building_code(),
                name,
                address,
                use,
                round(height if height is not None else floors * storey, 1),
                floors,
                ug,
                terrain.ground((x0 + x1) / 2, (y0 + y1) / 2),
                area,
                residents,
                year,
                pcode,
                shapely.MultiPolygon([shapely.box(x0, y0, x1, y1)]),
            )
        )

    for block in lat.blocks():
        i0, j0, i1, j1 = block
        net = lat.net_rect(i0, j0, i1, j1)
        if (i0, j0, i1, j1) == (
            lat.superblock[0],
            lat.superblock[2],
            lat.superblock[1],
            lat.superblock[3],
        ):
            _station_block(lat, net, p_rows, add_building, parcel_code, codes)
            continue
        k = 1 + int(rng.choice(4, p=np.array(spec.parcels_per_block)))
        bx, by = (net[0] + net[2]) / 2, (net[1] + net[3]) / 2
        near = math.hypot(bx - lat.cx, by - lat.cy) < NEAR_STATION
        for rect in _split(net, k, rng):
            use_code = _choose(rng, USE_WEIGHTS_NEAR if near else USE_WEIGHTS_FAR)
            assert use_code in codes
            rule = RULES[use_code]
            far, h_limit = _controls(rule, rng, near)
            pcode = parcel_code()
            area = round((rect[2] - rect[0]) * (rect[3] - rect[1]), 2)
            p_rows.append(
                (pcode, use_code, area, far, h_limit, shapely.MultiPolygon([shapely.box(*rect)]))
            )
            _place_buildings(lat, rule, rect, block, near, h_limit, pcode, brng, add_building)

    crs = f"EPSG:{STORAGE_EPSG}"
    parcel = gpd.GeoDataFrame(
        {
            "parcel_cd": [r[0] for r in p_rows],
            "land_use": [r[1] for r in p_rows],
            "area_m2": [r[2] for r in p_rows],
            "far_plan": [r[3] for r in p_rows],
            "h_limit": [r[4] for r in p_rows],
        },
        geometry=[r[5] for r in p_rows],
        crs=crs,
    )
    cols = [
        "bldg_cd",
        "name",
        "address",
        "use",
        "height_m",
        "floors",
        "ug_floors",
        "base_elev",
        "floor_area",
        "residents",
        "build_year",
        "parcel_cd",
    ]
    data: dict[str, list | np.ndarray] = {c: [r[n] for r in b_rows] for n, c in enumerate(cols)}
    data["residents"] = np.array(
        [np.nan if v is None else v for v in data["residents"]], dtype=float
    )
    building = gpd.GeoDataFrame(data, geometry=[r[-1] for r in b_rows], crs=crs)
    building["residents"] = building["residents"].astype("Int64")
    return LandUse(parcel, building)


def _place_buildings(
    lat: Lattice,
    rule: UseRule,
    rect: tuple[float, float, float, float],
    block: tuple[int, int, int, int],
    near: bool,
    h_limit: float,
    pcode: str,
    rng: np.random.Generator,
    add_building,
) -> None:
    """Put the rule's buildings in disjoint slots along the parcel's long axis."""
    spec = lat.spec
    lo, hi = rule.count
    n = int(rng.integers(lo, hi + 1))
    n = int(math.floor(n * spec.building_scale + rng.random()))
    if rule.count[0] > 0:
        n = max(n, 1)
    if n == 0:
        return
    setback = float(rng.uniform(6.0, 10.0))
    x0, y0, x1, y1 = rect[0] + setback, rect[1] + setback, rect[2] - setback, rect[3] - setback
    long_x = (x1 - x0) >= (y1 - y0)
    length, across = (x1 - x0, y1 - y0) if long_x else (y1 - y0, x1 - x0)
    gap = 8.0
    while n > 1 and length / n - gap < rule.width[0] * 0.6:
        n -= 1
    slot = length / n
    road_name, address = _address(lat, block, rect)
    word = names.estate_word(rng)
    suffix = SUFFIX[rule.use][int(rng.integers(len(SUFFIX[rule.use])))]
    base_name = (road_name[:2] if rule.use == "education" else word) + suffix
    year0 = int(rng.integers(*rule.years)) if not near else int(rng.integers(2010, 2025))
    for m in range(n):
        w = min(float(rng.uniform(*rule.width)), slot - gap)
        d = min(float(rng.uniform(*rule.depth)), across - 2.0)
        if w < 6.0 or d < 6.0:
            continue
        a0 = m * slot + float(rng.uniform(0, slot - gap - w)) + gap / 2
        b0 = float(rng.uniform(0, across - d))
        if long_x:
            fp = (x0 + a0, y0 + b0, x0 + a0 + w, y0 + b0 + d)
        else:
            fp = (x0 + b0, y0 + a0, x0 + b0 + d, y0 + a0 + w)
        fp = round_rect(fp)
        storey = round(float(rng.uniform(*rule.storey)), 1)
        floors = int(rng.integers(rule.floors[0], rule.floors[1] + 1))
        floors = max(1, min(floors, int(h_limit // storey)))
        ug = int(rng.integers(rule.ug[0], rule.ug[1] + 1))
        name = base_name if n == 1 else f"{base_name}{m + 1}栋"
        if rule.use == "office" and n > 1:
            name = f"{base_name}T{m + 1}"
        year = min(2025, year0 + int(rng.integers(0, 3)))
        add_building(fp, name, address, rule.use, floors, storey, ug, year, pcode)


def _station_block(
    lat: Lattice,
    net: tuple[float, float, float, float],
    p_rows: list,
    add_building,
    parcel_code,
    codes: dict[str, str],
) -> None:
    """The superblock: S3 hub parcel with the hall, S4 bus/taxi yards east and west of it."""
    half_net = min(lat.cx - net[0], net[2] - lat.cx)
    half = round(HALL_WE / 2 + 0.45 * (half_net - HALL_WE / 2), 3)
    xw, xe = round(lat.cx - half, 3), round(lat.cx + half, 3)
    parts = [
        ("S4", (net[0], net[1], xw, net[3]), "深圳北站西广场公交首末站"),
        ("S3", (xw, net[1], xe, net[3]), None),
        ("S4", (xe, net[1], net[2], net[3]), "深圳北站东广场出租车场站"),
    ]
    road = lat.ns_roads[lat.station_node[0]]
    for use_code, rect, bname in parts:
        assert use_code in codes
        pcode = parcel_code()
        area = round((rect[2] - rect[0]) * (rect[3] - rect[1]), 2)
        far = round(HALL_FLOOR_AREA / area, 2) if use_code == "S3" else 0.5
        p_rows.append(
            (
                pcode,
                use_code,
                area,
                far,
                50.0 if use_code == "S3" else 24.0,
                shapely.MultiPolygon([shapely.box(*rect)]),
            )
        )
        if use_code == "S3":
            hall = (
                round(lat.cx - HALL_WE / 2, 3),
                round(lat.cy - HALL_NS / 2, 3),
                round(lat.cx + HALL_WE / 2, 3),
                round(lat.cy + HALL_NS / 2, 3),
            )
            add_building(
                hall,
                "深圳北站",
                f"{road.name}28号",
                "transport",
                3,
                0.0,
                2,
                2011,
                pcode,
                floor_area=HALL_FLOOR_AREA,
                height=HALL_HEIGHT,
            )
        else:
            w = rect[2] - rect[0]
            x0 = round(rect[0] + w * 0.2, 3)
            x1 = round(rect[2] - w * 0.2, 3)
            y0 = round(lat.cy - 40.0, 3)
            add_building(
                (x0, y0, x1, round(lat.cy + 40.0, 3)),
                bname,
                f"{road.name}26号",
                "transport",
                2,
                4.5,
                0,
                2011,
                pcode,
            )
