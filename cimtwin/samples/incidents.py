"""Incidents (事件): pipe bursts, gas leaks, collapses, fires, waterlogging, street issues.

Each incident is placed on the object it is about: a burst lies exactly on a water main, a
missing cover on a component whose status is 丢失, a fire on a building.  Report times are
drawn backwards from a fixed epoch derived from nothing but the seed, never from the clock.
Coordinates are written as RFC 7946 lon/lat (CRS84) with 7 decimals (about 1 cm).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import geopandas as gpd
import numpy as np
import shapely

from cimtwin.samples.landuse import LandUse
from cimtwin.samples.layout import Lattice, Terrain
from cimtwin.samples.network import PipelineSet
from cimtwin.samples.spec import INCIDENT_EPOCH, STORAGE_EPSG, substream
from cimtwin.spatial.crs import transformer
from cimtwin.spatial.incident import INCIDENT_STATUSES

TYPES = {  # incident type -> (weight, severity range, title template)
    "pipe_burst": (0.14, (2, 4), "{road}给水管爆管"),
    "gas_leak": (0.07, (3, 4), "{road}燃气管道泄漏"),
    "road_collapse": (0.06, (2, 4), "{road}路面塌陷"),
    "fire": (0.08, (2, 4), "{name}火情"),
    "waterlogging": (0.12, (1, 3), "{road}路段积水"),
    "illegal_parking": (0.2, (1, 1), "{road}违章停车"),
    "manhole_cover_missing": (0.1, (2, 3), "{road}井盖缺失"),
    "streetlight_fault": (0.13, (1, 2), "{road}路灯不亮"),
    "garbage_overflow": (0.1, (1, 1), "{road}垃圾满溢"),
}
DESCRIPTIONS = {
    "pipe_burst": "巡查发现{road}{no}至{no2}段DN{dia}给水管爆管,路面冒水,需关阀抢修。",
    "gas_leak": "市民报告{road}附近有燃气味,疑似{no}附近中低压燃气管道泄漏。",
    "road_collapse": "{road}机动车道出现路面塌陷,面积约{area}平方米,已设置围挡。",
    "fire": "{name}({addr})发生火情,消防已出动。",
    "waterlogging": "强降雨后{road}{no}雨水井附近积水约{cm}厘米,影响通行。",
    "illegal_parking": "{road}人行道违章停放机动车{n}辆。",
    "manhole_cover_missing": "{name}缺失,存在安全隐患,部件编码{cid}。",
    "streetlight_fault": "{name}夜间不亮,部件编码{cid}。",
    "garbage_overflow": "{name}垃圾满溢,部件编码{cid}。",
}
COVERS = ["0101", "0102", "0103", "0105", "0107", "0111"]
STATUS_WEIGHTS = np.array([0.15, 0.15, 0.2, 0.3, 0.2])


def _pipe_candidates(pipes: PipelineSet, minors: tuple[str, ...]) -> list:
    """Pipes of the given networks an incident may sit on (mains, not hydrant branches)."""
    cands = []
    for net in pipes.networks:
        if net.minor in minors:
            cands += [
                (net, p)
                for p in net.pipes
                if net.points[p.b].appurt != "消防栓" and net.length(p) > 4.0
            ]
    return cands


def _on_pipe(cands: list, rng: np.random.Generator) -> dict:
    """A point exactly on a random pipe from ``cands``."""
    net, p = cands[int(rng.integers(len(cands)))]
    a, b = net.points[p.a], net.points[p.b]
    t = float(rng.uniform(0.2, 0.8))
    return {
        "x": a.x + (b.x - a.x) * t,
        "y": a.y + (b.y - a.y) * t,
        "road": p.road,
        "no": a.no,
        "no2": b.no,
        "dia": p.diameter or "",
        "network": net.major,
        "attrs": {
            "network": net.major,
            "subtype": net.minor,
            "from_point": a.no,
            "to_point": b.no,
            "road": p.road,
        },
    }


def build_incidents(
    lat: Lattice,
    terrain: Terrain,
    pipes: PipelineSet,
    land: LandUse,
    components: gpd.GeoDataFrame,
    seed: int,
    n: int,
) -> list[dict]:
    """``n`` incidents as GeoJSON features, sorted by report time, ids assigned in that order."""
    rng = substream(seed, "incidents")
    types = list(TYPES)
    w = np.array([TYPES[t][0] for t in types])
    kinds = [types[k] for k in rng.choice(len(types), size=n, p=w / w.sum())]
    if "pipe_burst" not in kinds:
        kinds[0] = "pipe_burst"
    cls = components["class_cd"].to_numpy()
    lost = (components["status"].to_numpy() == "丢失") & np.isin(cls, COVERS)
    pools = {
        "manhole_cover_missing": np.nonzero(lost)[0]
        if lost.any()
        else np.nonzero(np.isin(cls, COVERS))[0],  # nothing lost in a small sample
        "streetlight_fault": np.nonzero(cls == "0118")[0],
        "garbage_overflow": np.nonzero(cls == "0305")[0],
    }
    comp_rows = list(zip(components["comp_id"].tolist(), components["name"].tolist(), strict=True))
    comp_pt = shapely.point_on_surface(components.geometry.values)
    comp_xy = np.column_stack([shapely.get_x(comp_pt), shapely.get_y(comp_pt)])
    storm = [
        p for net in pipes.networks if net.minor == "YS" for p in net.points if p.appurt == "雨水井"
    ]
    stretches = lat.road_stretches()
    on_pipes = {
        "pipe_burst": _pipe_candidates(pipes, ("JP", "SS")),
        "gas_leak": _pipe_candidates(pipes, ("TR",)),
    }
    epoch = datetime.fromisoformat(INCIDENT_EPOCH)
    out = []
    for kind in kinds:
        info: dict = {}
        if kind in ("pipe_burst", "gas_leak"):
            info = _on_pipe(on_pipes[kind], rng)
        elif kind == "waterlogging":
            p = storm[int(rng.integers(len(storm)))]
            info = {
                "x": p.x,
                "y": p.y,
                "road": p.road,
                "no": p.no,
                "cm": int(rng.integers(10, 40)),
                "attrs": {"point": p.no, "road": p.road},
            }
        elif kind == "fire":
            b = land.building.iloc[int(rng.integers(len(land.building)))]
            c = b.geometry.centroid
            info = {
                "x": c.x,
                "y": c.y,
                "name": b["name"],
                "addr": b["address"],
                "road": b["address"],
                "attrs": {"building": b["bldg_cd"]},
            }
        elif kind in ("road_collapse", "illegal_parking"):
            road, x0, y0, x1, y1 = stretches[int(rng.integers(len(stretches)))]
            t = float(rng.uniform(0.2, 0.8))
            side = float(rng.uniform(-0.3, 0.3)) if kind == "road_collapse" else 0.42
            off = side * road.width
            ew = abs(x1 - x0) > abs(y1 - y0)
            info = {
                "x": x0 + (x1 - x0) * t + (0 if ew else off),
                "y": y0 + (y1 - y0) * t + (off if ew else 0),
                "road": road.name,
                "area": int(rng.integers(2, 30)),
                "n": int(rng.integers(1, 6)),
                "attrs": {"road": road.name},
            }
        else:
            idx = pools[kind]
            k = int(idx[int(rng.integers(len(idx)))])
            row = comp_rows[k]
            info = {
                "x": comp_xy[k, 0],
                "y": comp_xy[k, 1],
                "name": row[1],
                "cid": row[0],
                "road": row[1],
                "attrs": {"component": row[0]},
            }
        lo, hi = TYPES[kind][1]
        severity = int(rng.integers(lo, hi + 1))
        status = INCIDENT_STATUSES[
            int(rng.choice(len(INCIDENT_STATUSES), p=STATUS_WEIGHTS / STATUS_WEIGHTS.sum()))
        ]
        seconds = int(rng.integers(0, 30 * 86400))
        when = epoch - timedelta(seconds=seconds)
        fmt = {
            "road": "",
            "name": "",
            "no": "",
            "no2": "",
            "dia": "",
            "area": "",
            "cm": "",
            "n": "",
            "addr": "",
            "cid": "",
        }
        fmt.update({k: v for k, v in info.items() if k not in ("x", "y", "attrs")})
        out.append(
            {
                "kind": kind,
                "severity": severity,
                "status": status,
                "when": when,
                "title": TYPES[kind][2].format(**fmt),
                "description": DESCRIPTIONS[kind].format(**fmt),
                "x": round(float(info["x"]), 3),
                "y": round(float(info["y"]), 3),
                "attrs": info["attrs"],
            }
        )
    out.sort(key=lambda r: (r["when"], r["kind"], r["x"], r["y"]))
    tr = transformer(STORAGE_EPSG, "OGC:CRS84")
    lon, lat_ = tr.transform(np.array([r["x"] for r in out]), np.array([r["y"] for r in out]))
    features = []
    for k, r in enumerate(out):
        ext = f"{lat.county.abbr}-{r['when']:%Y%m%d}-{k + 1:06d}"
        features.append(
            {
                "type": "Feature",
                "id": ext,
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(float(lon[k]), 7), round(float(lat_[k]), 7)],
                },
                "properties": {
                    "external_id": ext,
                    "incident_type": r["kind"],
                    "severity": r["severity"],
                    "status": r["status"],
                    "title": r["title"],
                    "description": r["description"],
                    "reported_at": r["when"].isoformat(),
                    "elevation_m": terrain.ground(r["x"], r["y"]),
                    "attributes": r["attrs"],
                },
            }
        )
    return features
