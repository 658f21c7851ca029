"""City components (城市部件): street furniture, trees and the covers over the pipe network.

Manhole covers, valve covers and fire hydrants are placed exactly on the pipeline survey points
they belong to, so a cover and its manhole share coordinates to the millimetre.  Street
objects (lamps, trees, gullies, bins, signs, bus shelters) are laid along every road stretch
with numpy, which keeps the 500 000-object district scale fast.  Ids are county + class +
6-digit sequence per class.  Grid codes are not written: the importer assigns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from cimtwin.reference import component_classes
from cimtwin.samples.landuse import LandUse
from cimtwin.samples.layout import Lattice, Terrain
from cimtwin.samples.network import PipelineSet
from cimtwin.samples.spec import STORAGE_EPSG, substream

# Invented department code list (主管/权属/养护), written to departments.csv as well.
DEPARTMENTS = {
    "CG01": "龙华区城市管理和综合执法局",
    "SW01": "龙华区水务局",
    "SW02": "深圳市水务集团",
    "RQ01": "深圳燃气",
    "GD01": "深圳供电局",
    "TX01": "中国电信",
    "TX02": "中国移动",
    "TX03": "中国联通",
    "TX04": "天威视讯",
    "JT01": "龙华区交通运输局",
    "JJ01": "龙华交警大队",
    "XF01": "龙华区消防救援大队",
    "DT01": "深圳地铁集团",
    "YZ01": "中国邮政深圳分公司",
    "HW01": "龙华区环境卫生管理所",
    "YH01": "龙华区市政设施养护中心",
    "YH02": "龙华区园林绿化养护中心",
}
TELECOM_DEPT = {"中国电信": "TX01", "中国移动": "TX02", "中国联通": "TX03", "天威视讯": "TX04"}
# class code -> (主管, 权属, 养护)
CLASS_DEPTS = {
    "0101": ("SW01", "SW02", "SW02"),
    "0102": ("SW01", "SW02", "SW02"),
    "0103": ("SW01", "SW01", "YH01"),
    "0104": ("SW01", "SW01", "YH01"),
    "0105": ("CG01", "GD01", "GD01"),
    "0107": ("CG01", "TX01", "TX01"),
    "0111": ("CG01", "RQ01", "RQ01"),
    "0113": ("XF01", "SW02", "SW02"),
    "0115": ("CG01", "TX01", "TX01"),
    "0116": ("CG01", "GD01", "GD01"),
    "0118": ("CG01", "CG01", "YH01"),
    "0121": ("CG01", "CG01", "CG01"),
    "0123": ("CG01", "YZ01", "YZ01"),
    "0201": ("JT01", "JT01", "JT01"),
    "0203": ("JT01", "JT01", "YH01"),
    "0209": ("JJ01", "JJ01", "YH01"),
    "0211": ("JJ01", "JT01", "YH01"),
    "0213": ("CG01", "CG01", "YH01"),
    "0301": ("CG01", "CG01", "HW01"),
    "0305": ("CG01", "CG01", "HW01"),
    "0402": ("CG01", "CG01", "YH02"),
    "0405": ("CG01", "CG01", "YH02"),
    "0407": ("CG01", "CG01", "YH02"),
    "0501": ("CG01", "CG01", "CG01"),
    "2114": ("JT01", "DT01", "DT01"),
}
# (network minor, appurtenance) -> cover/fixture class placed exactly on the survey point
POINT_CLASSES = {
    ("JP", "阀门"): "0101",
    ("SS", "阀门"): "0101",
    ("JP", "消防栓"): "0113",
    ("YS", "雨水井"): "0103",
    ("WS", "污水井"): "0102",
    ("TR", "阀门"): "0111",
    ("GD", "电力井"): "0105",
    ("XX", "通信井"): "0107",
}
COVER_CLASSES = ("0101", "0102", "0103", "0105", "0107", "0111")
STATUSES = ("完好", "破损", "丢失", "占用")
COLUMNS = ["comp_id", "class_cd", "name", "dept_auth", "dept_own", "dept_mnt", "status", "elev"]


@dataclass
class _Batch:
    """Components of one class, as arrays (points) or a geometry list (lines, polygons)."""

    cls: str
    names: list[str]
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    geoms: list | None = None
    owner: list[str] | None = None  # per-object 权属/养护 override (telecom operators)


def _along(
    lat: Lattice,
    spacing: float,
    inset: float,
    sides: tuple[int, ...],
    clear: float,
    phase: float = 0.0,
    main_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Points every ``spacing`` m along each road stretch, ``inset`` m inside the road edge."""
    st = [s for s in lat.road_stretches() if s[0].main or not main_only]
    if not st:
        return np.zeros(0), np.zeros(0), []
    x0 = np.array([s[1] for s in st])
    y0 = np.array([s[2] for s in st])
    x1 = np.array([s[3] for s in st])
    y1 = np.array([s[4] for s in st])
    half = np.array([s[0].width / 2 for s in st])
    length = np.hypot(x1 - x0, y1 - y0)
    ew = np.abs(x1 - x0) > np.abs(y1 - y0)
    xs, ys, roads = [], [], []
    for side in sides:
        usable = length - 2 * clear - phase
        n = np.where(usable >= 0, np.floor(np.maximum(usable, 0) / spacing).astype(int) + 1, 0)
        idx = np.repeat(np.arange(len(st)), n)
        first = np.cumsum(n) - n
        k = np.arange(idx.size) - np.repeat(first, n)
        t = clear + phase + k * spacing
        f = t / length[idx]
        off = side * (half[idx] - inset)
        px = x0[idx] + (x1[idx] - x0[idx]) * f + np.where(ew[idx], 0.0, off)
        py = y0[idx] + (y1[idx] - y0[idx]) * f + np.where(ew[idx], off, 0.0)
        xs.append(px)
        ys.append(py)
        roads += [st[i][0].name for i in idx.tolist()]
    return np.round(np.concatenate(xs), 3), np.round(np.concatenate(ys), 3), roads


def _road_batch(cls: str, lat: Lattice, cname: str, **kw) -> _Batch:
    x, y, roads = _along(lat, **kw)
    return _Batch(cls, [r + cname for r in roads], x, y)


def build_components(
    lat: Lattice, terrain: Terrain, pipes: PipelineSet, land: LandUse, seed: int
) -> gpd.GeoDataFrame:
    """All components, sorted by class then placement, with ids assigned in that order."""
    rng = substream(seed, "components")
    classes = component_classes()
    cname = {c: classes[c].name for c in CLASS_DEPTS}
    spec = lat.spec
    batches: list[_Batch] = []

    # covers and fixtures exactly on the survey points
    for net in pipes.networks:
        owner: dict[int, str] = {}
        for p in net.pipes:
            owner.setdefault(p.a, p.owner)
            owner.setdefault(p.b, p.owner)
        by_cls: dict[str, list[int]] = {}
        for k, pt in enumerate(net.points):
            cls = POINT_CLASSES.get((net.minor, pt.appurt))
            if cls is None and net.minor == "GD" and pt.feature == "出地":
                cls = "0116"
            if cls:
                by_cls.setdefault(cls, []).append(k)
        for cls, ks in by_cls.items():
            pts = [net.points[k] for k in ks]
            batches.append(
                _Batch(
                    cls,
                    [f"{p.road}{cname[cls]}({p.no})" for p in pts],
                    np.array([p.x for p in pts]),
                    np.array([p.y for p in pts]),
                    owner=[TELECOM_DEPT.get(owner.get(k, ""), "") for k in ks]
                    if cls == "0107"
                    else None,
                )
            )
        if net.minor == "XX":  # cross-connect cabinets beside some telecom manholes
            ks = [
                k
                for k, p in enumerate(net.points)
                if p.feature in ("三通", "四通") and rng.random() < 0.25
            ]
            pts = [net.points[k] for k in ks]
            batches.append(
                _Batch(
                    "0115",
                    [f"{p.road}{cname['0115']}" for p in pts],
                    np.round(np.array([p.x - 1.2 for p in pts]), 3),
                    np.round(np.array([p.y - 1.2 for p in pts]), 3),
                    owner=[TELECOM_DEPT.get(owner.get(k, ""), "TX01") for k in ks],
                )
            )

    batches += [
        _road_batch(
            "0402",
            lat,
            cname["0402"],
            spacing=spec.tree_spacing,
            inset=1.5,
            sides=(1, -1),
            clear=14.0,
        ),
        _road_batch(
            "0118",
            lat,
            cname["0118"],
            spacing=2 * spec.lamp_spacing,
            inset=0.6,
            sides=(1,),
            clear=12.0,
        ),
        _road_batch(
            "0118",
            lat,
            cname["0118"],
            spacing=2 * spec.lamp_spacing,
            inset=0.6,
            sides=(-1,),
            clear=12.0,
            phase=spec.lamp_spacing,
        ),
        _road_batch(
            "0104",
            lat,
            cname["0104"],
            spacing=spec.gully_spacing,
            inset=3.5,
            sides=(1, -1),
            clear=10.0,
            phase=7.0,
        ),
        _road_batch(
            "0305",
            lat,
            cname["0305"],
            spacing=spec.bin_spacing,
            inset=2.2,
            sides=(1,),
            clear=20.0,
            phase=20.0,
        ),
        _road_batch(
            "0203",
            lat,
            cname["0203"],
            spacing=500.0,
            inset=2.8,
            sides=(1, -1),
            clear=30.0,
            phase=60.0,
            main_only=True,
        ),
        _road_batch("0209", lat, cname["0209"], spacing=1e9, inset=0.8, sides=(1, -1), clear=18.0),
        _road_batch("0213", lat, cname["0213"], spacing=1e9, inset=0.4, sides=(1,), clear=11.0),
        _road_batch(
            "0121",
            lat,
            cname["0121"],
            spacing=400.0,
            inset=2.5,
            sides=(-1,),
            clear=25.0,
            phase=90.0,
            main_only=True,
        ),
        _road_batch(
            "0123",
            lat,
            cname["0123"],
            spacing=600.0,
            inset=2.5,
            sides=(-1,),
            clear=25.0,
            phase=150.0,
            main_only=True,
        ),
        _road_batch(
            "0501",
            lat,
            cname["0501"],
            spacing=300.0,
            inset=2.4,
            sides=(1,),
            clear=25.0,
            phase=110.0,
        ),
    ]
    # median barriers on main roads (lines)
    lines, lnames = [], []
    for road, x0, y0, x1, y1 in lat.road_stretches():
        if road.main:
            c = 25.0
            if x1 - x0 > y1 - y0:
                lines.append(shapely.LineString([(round(x0 + c, 3), y0), (round(x1 - c, 3), y1)]))
            else:
                lines.append(shapely.LineString([(x0, round(y0 + c, 3)), (x1, round(y1 - c, 3))]))
            lnames.append(f"{road.name}中央隔离护栏")
    batches.append(_Batch("0211", lnames, geoms=lines))
    batches += _parcel_batches(land, rng, cname)
    batches.append(_station_batch(lat))
    return _assemble(batches, terrain, rng, lat.county.code)


def _parcel_batches(land: LandUse, rng: np.random.Generator, cname: dict[str, str]) -> list[_Batch]:
    """Green spaces (polygons), toilets and benches in parks, car parks on S4/B1 parcels."""
    parcel = land.parcel
    green = parcel[parcel["land_use"] == "G1"]
    polys, gnames, toilets, benches = [], [], [], []
    for code, geom in zip(green["parcel_cd"], green.geometry, strict=True):
        x0, y0, x1, y1 = geom.bounds
        polys.append(
            shapely.MultiPolygon(
                [
                    shapely.box(
                        round(x0 + 3, 3), round(y0 + 3, 3), round(x1 - 3, 3), round(y1 - 3, 3)
                    )
                ]
            )
        )
        gnames.append(f"{code}{cname['0405']}")
        if rng.random() < 0.4:
            toilets.append((round(x0 + 12.0, 3), round(y0 + 12.0, 3), code))
        for _ in range(4):
            benches.append(
                (
                    round(float(rng.uniform(x0 + 8, x1 - 8)), 3),
                    round(float(rng.uniform(y0 + 8, y1 - 8)), 3),
                    code,
                )
            )
    parks = parcel[(parcel["land_use"] == "S4") | (parcel["land_use"] == "B1")]
    lots = []
    for code, use, geom in zip(parks["parcel_cd"], parks["land_use"], parks.geometry, strict=True):
        if use == "S4" or rng.random() < 0.3:
            x0, y0, x1, y1 = geom.bounds
            lots.append((round(x0 + 5.0, 3), round((y0 + y1) / 2, 3), code))

    def pts(cls: str, rows: list[tuple[float, float, str]]) -> _Batch:
        return _Batch(
            cls,
            [f"{r[2]}{cname[cls]}" for r in rows],
            np.array([r[0] for r in rows]),
            np.array([r[1] for r in rows]),
        )

    return [
        _Batch("0405", gnames, geoms=polys),
        pts("0301", toilets),
        pts("0407", benches),
        pts("0201", lots),
    ]


def _station_batch(lat: Lattice) -> _Batch:
    """Metro entrances (A-D) at the ends of the line 5 station box."""
    x, cy = float(lat.xs[lat.station_node[0]]), lat.cy
    rows = [
        (x - 16, cy + 112, "2114", "A"),
        (x + 16, cy + 112, "2114", "B"),
        (x - 16, cy - 112, "2114", "C"),
        (x + 16, cy - 112, "2114", "D"),
    ]
    return _Batch(
        "2114",
        [f"地铁5号线深圳北站{r[3]}出入口" for r in rows],
        np.round(np.array([r[0] for r in rows]), 3),
        np.round(np.array([r[1] for r in rows]), 3),
    )


def _assemble(
    batches: list[_Batch], terrain: Terrain, rng: np.random.Generator, county: str
) -> gpd.GeoDataFrame:
    order = sorted(range(len(batches)), key=lambda k: (batches[k].cls, k))
    frames_cls, frames_names, geoms, elev, own = [], [], [], [], []
    for k in order:
        b = batches[k]
        n = len(b.names)
        if n == 0:
            continue
        if b.geoms is None:
            assert b.x is not None and b.y is not None  # a batch without shapes has points
            geoms.append(shapely.points(np.column_stack([b.x, b.y])))
            elev.append(np.round(terrain.z(b.x, b.y), 2))
        else:
            arr = np.empty(n, dtype=object)
            arr[:] = b.geoms
            geoms.append(arr)
            c = shapely.centroid(arr)
            elev.append(np.round(terrain.z(shapely.get_x(c), shapely.get_y(c)), 2))
        frames_cls += [b.cls] * n
        frames_names += b.names
        own += b.owner if b.owner is not None else [""] * n
    cls = np.array(frames_cls)
    n = cls.size
    seq = np.zeros(n, dtype=int)
    counters: dict[str, int] = {}
    for k, c in enumerate(frames_cls):
        counters[c] = counters.get(c, 0) + 1
        seq[k] = counters[c]
    ids = [f"{county}{c}{s:06d}" for c, s in zip(frames_cls, seq.tolist(), strict=True)]
    depts = [CLASS_DEPTS[c] for c in frames_cls]
    cover = np.isin(cls, COVER_CLASSES)
    p_cover = np.array([0.93, 0.045, 0.01, 0.015])
    p_other = np.array([0.95, 0.035, 0.002, 0.013])
    u = rng.random(n)
    status_idx = np.where(
        cover,
        np.searchsorted(np.cumsum(p_cover), u, side="right"),
        np.searchsorted(np.cumsum(p_other), u, side="right"),
    )
    status_idx = np.minimum(status_idx, len(STATUSES) - 1)
    data = {
        "comp_id": ids,
        "class_cd": frames_cls,
        "name": frames_names,
        "dept_auth": [d[0] for d in depts],
        "dept_own": [o or d[1] for d, o in zip(depts, own, strict=True)],
        "dept_mnt": [o or d[2] for d, o in zip(depts, own, strict=True)],
        "status": [STATUSES[k] for k in status_idx.tolist()],
        "elev": np.concatenate(elev),
    }
    return gpd.GeoDataFrame(data, geometry=np.concatenate(geoms), crs=f"EPSG:{STORAGE_EPSG}")
