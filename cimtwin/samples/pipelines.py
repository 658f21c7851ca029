"""Synthetic underground pipeline networks, as a CJJ 61 survey would deliver them.

Each network runs under the roads at its own lateral offset from the road centre line (water
+6 m, gas -6 m, power +9 m, telecom -9 m, storm +3 m, sewage -3 m, transmission main +13 m),
so two networks never share a line.  A network on the lattice is the road lattice shifted by
(offset, offset): its junctions sit at (x_i + o, y_j + o).  Survey points are placed at every
junction, bend, appurtenance and at most every 75 m on straight runs.

Pressure and cable networks are built here; gravity drainage (a tree with inverts computed in
flow order) is in :mod:`cimtwin.samples.drainage`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cimtwin.samples.drainage import drainage_network
from cimtwin.samples.layout import Lattice, Road, Terrain
from cimtwin.samples.network import (
    DEPTH_RANGE,
    MAX_GAP,
    Network,
    Pipe,
    PipelineSet,
    burial,
    material,
    minor_type,
)
from cimtwin.samples.spec import substream


@dataclass
class LatticeNetCfg:
    """How a pressure or cable network is laid on the lattice."""

    prefix: str
    major: str
    minor: str
    offset: float
    ew_lines: list[int]
    ns_lines: list[int]
    depth: tuple[float, float]
    attrs: Callable[[Road, int], dict]
    valve_prob: float = 0.0  # share of junctions with a valve on every arm
    valve_dist: tuple[float, float] = (6.0, 10.0)
    hydrant_spacing: float | None = None
    manhole: str = ""
    manhole_spacing: float | None = None
    well: tuple[float, float] = (1.5, 2.0)
    end_feature: str = "预留口"
    end_manhole: bool = False


def _size(a: dict) -> tuple:
    return (a.get("diameter"), a.get("section"))


def lattice_network(
    lat: Lattice, terrain: Terrain, rng: np.random.Generator, cfg: LatticeNetCfg
) -> Network:
    """Lay a pressure/cable network on the chosen road lines of the lattice."""
    minor_type(cfg.major, cfg.minor)
    net = Network(cfg.prefix, cfg.major, cfg.minor)
    o = cfg.offset
    lo, hi = cfg.depth
    edges: list[tuple[Road, tuple[int, int], tuple[int, int], int]] = []
    for j in cfg.ew_lines:
        edges += [
            (lat.ew_roads[j], (i, j), (i + 1, j), i) for i in range(lat.nx) if lat.ew_edge[j, i]
        ]
    for i in cfg.ns_lines:
        edges += [
            (lat.ns_roads[i], (i, j), (i, j + 1), j) for j in range(lat.ny) if lat.ns_edge[i, j]
        ]
    attrs = [cfg.attrs(road, k) for road, _, _, k in edges]
    node_edges: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for e, (road, u, v, _) in enumerate(edges):
        du, dv = ("E", "W") if road.axis == "ew" else ("N", "S")
        node_edges.setdefault(u, []).append((e, du))
        node_edges.setdefault(v, []).append((e, dv))

    def pos(n: tuple[int, int]) -> tuple[float, float]:
        return float(lat.xs[n[0]]) + o, float(lat.ys[n[1]]) + o

    node_idx: dict[tuple[int, int], int] = {}
    valve_nodes: dict[tuple[int, int], bool] = {}
    for node in sorted(node_edges, key=lambda n: (n[1], n[0])):
        inc = node_edges[node]
        deg = len(inc)
        appurt = cfg.manhole
        road_name = edges[inc[0][0]][0].name
        if deg >= 3:
            feature = "三通" if deg == 3 else "四通"
        elif deg == 2:
            dirs = "".join(sorted(d for _, d in inc))
            if _size(attrs[inc[0][0]]) != _size(attrs[inc[1][0]]):
                feature = "变径"  # a reducing bend is recorded as the size change
            elif dirs not in ("EW", "NS"):
                feature = "弯头"
            else:
                feature = "" if appurt else "直线点"
        else:
            feature = cfg.end_feature
            appurt = cfg.manhole if cfg.end_manhole else ""
        well = float(rng.uniform(*cfg.well)) if appurt else None
        x, y = pos(node)
        node_idx[node] = net.point(
            feature, appurt, x, y, terrain, float(rng.uniform(lo, hi)), well, road=road_name
        )
        valve_nodes[node] = deg >= 3 and bool(rng.random() < cfg.valve_prob)

    for (road, u, v, _), a in zip(edges, attrs, strict=True):
        (x0, y0), (x1, y1) = pos(u), pos(v)
        length = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        events: list[tuple[float, str]] = []
        if valve_nodes[u]:
            events.append((float(rng.uniform(*cfg.valve_dist)), "valve"))
        if valve_nodes[v]:
            events.append((length - float(rng.uniform(*cfg.valve_dist)), "valve"))
        if cfg.hydrant_spacing:
            k = int(length / cfg.hydrant_spacing + 0.5)
            events += [(length * (m + 1) / (k + 1), "tap") for m in range(k)]
        if cfg.manhole_spacing:
            n = math.ceil(length / cfg.manhole_spacing)
            events += [(length * m / n, "manhole") for m in range(1, n)]
        events.sort()
        ts = [0.0] + [t for t, _ in events] + [length]
        for t_a, t_b in zip(ts[:-1], ts[1:], strict=True):
            if t_b - t_a > MAX_GAP:
                n = math.ceil((t_b - t_a) / MAX_GAP)
                events += [(t_a + (t_b - t_a) * m / n, "straight") for m in range(1, n)]
        events.sort()
        da, db = net.points[node_idx[u]].depth, net.points[node_idx[v]].depth
        prev = node_idx[u]
        for t, kind in events:
            depth = float(np.clip(da + (db - da) * t / length + rng.normal(0, 0.03), lo, hi))
            px, py = x0 + ux * t, y0 + uy * t
            if kind == "valve":
                closed = rng.random() < 0.02
                idx = net.point(
                    "",
                    "阀门",
                    px,
                    py,
                    terrain,
                    depth,
                    float(rng.uniform(1.3, 1.9)),
                    "关闭" if closed else "开启",
                    road.name,
                )
            elif kind == "manhole":
                idx = net.point(
                    "",
                    cfg.manhole,
                    px,
                    py,
                    terrain,
                    depth,
                    float(rng.uniform(*cfg.well)),
                    road=road.name,
                )
            elif kind == "tap":
                idx = net.point("三通", "", px, py, terrain, depth, road=road.name)
            else:
                idx = net.point("直线点", "", px, py, terrain, depth, road=road.name)
            net.pipes.append(Pipe(prev, idx, cfg.major, cfg.minor, road=road.name, **a))
            prev = idx
            if kind == "tap":
                _hydrant(net, terrain, rng, road, idx, px, py, ux, uy, o, a)
        net.pipes.append(Pipe(prev, node_idx[v], cfg.major, cfg.minor, road=road.name, **a))
    return net


def _hydrant(
    net: Network,
    terrain: Terrain,
    rng: np.random.Generator,
    road: Road,
    tap: int,
    px: float,
    py: float,
    ux: float,
    uy: float,
    o: float,
    a: dict,
) -> None:
    """A 3-5 m branch from the main to a hydrant at the kerb side of the pipe."""
    nx, ny = (0.0, 1.0) if abs(ux) > abs(uy) else (1.0, 0.0)  # away from the centre line
    if o < 0:
        nx, ny = -nx, -ny
    branch = float(np.clip(road.width / 2 - 1.0 - abs(o), 3.0, 5.0))
    idx = net.point(
        "",
        "消防栓",
        px + nx * branch,
        py + ny * branch,
        terrain,
        float(rng.uniform(1.0, 1.2)),
        road=road.name,
    )
    net.pipes.append(
        Pipe(
            tap,
            idx,
            net.major,
            net.minor,
            150 if road.main else 100,
            None,
            material("球墨铸铁"),
            burial("直埋"),
            a["owner"],
            a["year"],
            a["pressure"],
            road=road.name,
        )
    )


def _per_road(
    lat: Lattice, rng: np.random.Generator, make: Callable[[Road, np.random.Generator], dict]
) -> dict[tuple[str, int], dict]:
    """Draw each road's attributes once, in lattice order, so draws never depend on call order."""
    return {(r.axis, r.index): make(r, rng) for r in lat.ew_roads + lat.ns_roads}


def _pick(rng: np.random.Generator, values: tuple):
    return values[int(rng.integers(len(values)))]


def water_networks(lat: Lattice, terrain: Terrain, seed: int) -> list[Network]:
    """Distribution mains (JP) on every road, a transmission main (SS) on the main roads."""
    rng = substream(seed, "water")

    def jp(road: Road, r: np.random.Generator) -> dict:
        sizes = (400, 500) if road.main else _pick(r, ((300, 200), (300, 300), (200, 200)))
        return {
            "sizes": sizes,
            "change": int(r.integers(1, max(2, lat.nx))),
            "year": road.build_year + int(r.integers(0, 4)),
            "pe": r.random() < 0.3,
        }

    roads = _per_road(lat, rng, jp)

    def jp_attrs(road: Road, k: int) -> dict:
        d = roads[(road.axis, road.index)]
        dia = d["sizes"][0] if k < d["change"] else d["sizes"][1]
        mat = "聚乙烯塑料" if dia <= 200 and d["pe"] else "球墨铸铁"
        return {
            "diameter": dia,
            "section": None,
            "material": material(mat),
            "burial": burial("直埋"),
            "owner": "深圳市水务集团",
            "year": d["year"],
            "pressure": "0.4MPa",
        }

    all_ew = list(range(lat.ny + 1))
    all_ns = list(range(lat.nx + 1))
    jp_net = lattice_network(
        lat,
        terrain,
        rng,
        LatticeNetCfg(
            "JS",
            "JS",
            "JP",
            6.0,
            all_ew,
            all_ns,
            DEPTH_RANGE["JP"],
            jp_attrs,
            valve_prob=1.0,
            valve_dist=(6.0, 10.0),
            hydrant_spacing=120.0,
        ),
    )

    def ss_attrs(road: Road, k: int) -> dict:
        d = roads[(road.axis, road.index)]
        return {
            "diameter": 600,
            "section": None,
            "material": material("钢"),
            "burial": burial("直埋"),
            "owner": "深圳市水务集团",
            "year": d["year"],
            "pressure": "0.6MPa",
        }

    ss_net = lattice_network(
        lat,
        terrain,
        rng,
        LatticeNetCfg(
            "JS",
            "JS",
            "SS",
            13.0,
            [r.index for r in lat.ew_roads if r.main],
            [r.index for r in lat.ns_roads if r.main],
            (1.2, 1.5),
            ss_attrs,
            valve_prob=1.0,
            valve_dist=(6.0, 10.0),
        ),
    )
    return [jp_net, ss_net]


def gas_network(lat: Lattice, terrain: Terrain, seed: int) -> Network:
    """Natural gas (TR) on the main roads and about half the others; 中压 on main roads."""
    rng = substream(seed, "gas")
    ew = [r.index for r in lat.ew_roads if r.main or rng.random() < 0.45]
    ns = [r.index for r in lat.ns_roads if r.main or rng.random() < 0.45]

    def make(road: Road, r: np.random.Generator) -> dict:
        sizes = (
            _pick(r, ((300, 300), (250, 250)))
            if road.main
            else _pick(r, ((200, 160), (160, 160), (200, 200)))
        )
        return {
            "sizes": sizes,
            "change": int(r.integers(1, max(2, lat.nx))),
            "year": road.build_year + int(r.integers(0, 6)),
        }

    roads = _per_road(lat, rng, make)

    def attrs(road: Road, k: int) -> dict:
        d = roads[(road.axis, road.index)]
        dia = d["sizes"][0] if k < d["change"] else d["sizes"][1]
        mat = "钢" if dia == 300 else "聚乙烯塑料"
        return {
            "diameter": dia,
            "section": None,
            "material": material(mat),
            "burial": burial("直埋"),
            "owner": "深圳燃气",
            "year": d["year"],
            "pressure": "中压" if road.main else "低压",
        }

    return lattice_network(
        lat,
        terrain,
        rng,
        LatticeNetCfg(
            "RQ",
            "RQ",
            "TR",
            -6.0,
            ew,
            ns,
            DEPTH_RANGE["TR"],
            attrs,
            valve_prob=0.35,
            valve_dist=(4.0, 6.0),
        ),
    )


def power_network(lat: Lattice, terrain: Terrain, seed: int) -> Network:
    """10 kV cable duct banks (管块) under the main roads, manholes every ~60 m."""
    rng = substream(seed, "power")

    def make(road: Road, r: np.random.Generator) -> dict:
        return {
            "section": _pick(r, ("800X400", "1000X500", "1200X600")),
            "voltage": 20 if r.random() < 0.15 else 10,
            "cables": int(r.integers(4, 13)),
            "year": road.build_year + int(r.integers(0, 5)),
        }

    roads = _per_road(lat, rng, make)

    def attrs(road: Road, k: int) -> dict:
        d = roads[(road.axis, road.index)]
        return {
            "diameter": None,
            "section": d["section"],
            "material": material("铜"),
            "burial": burial("管块"),
            "owner": "深圳供电局",
            "year": d["year"],
            "voltage": d["voltage"],
            "cables": d["cables"],
        }

    return lattice_network(
        lat,
        terrain,
        rng,
        LatticeNetCfg(
            "DL",
            "DL",
            "GD",
            9.0,
            [r.index for r in lat.ew_roads if r.main],
            [r.index for r in lat.ns_roads if r.main],
            DEPTH_RANGE["GD"],
            attrs,
            manhole="电力井",
            manhole_spacing=60.0,
            well=(1.6, 2.2),
            end_feature="出地",
        ),
    )


TELECOM_SECTIONS = {6: "600X250", 9: "600X300", 12: "800X300", 18: "800X400", 24: "1000X400"}
TELECOM_OWNERS = ("中国电信", "中国移动", "中国联通", "天威视讯")


def telecom_network(lat: Lattice, terrain: Terrain, seed: int) -> Network:
    """Telecom duct banks on most roads; hole counts may step down along a road."""
    rng = substream(seed, "telecom")
    ew = [r.index for r in lat.ew_roads if r.main or rng.random() < 0.8]
    ns = [r.index for r in lat.ns_roads if r.main or rng.random() < 0.8]

    def make(road: Road, r: np.random.Generator) -> dict:
        holes = (
            _pick(r, ((24, 24), (24, 18)))
            if road.main
            else _pick(r, ((12, 9), (9, 9), (12, 12), (9, 6), (6, 6)))
        )
        year = road.build_year + int(r.integers(0, 6))
        return {
            "holes": holes,
            "used": [int(r.integers(max(1, h // 3), h + 1)) for h in holes],
            "change": int(r.integers(1, max(2, lat.nx))),
            "year": year,
            "owner": _pick(r, TELECOM_OWNERS),
            "copper": year < 2004,
        }

    roads = _per_road(lat, rng, make)

    def attrs(road: Road, k: int) -> dict:
        d = roads[(road.axis, road.index)]
        n = 0 if k < d["change"] else 1
        holes = d["holes"][n]
        return {
            "diameter": None,
            "section": TELECOM_SECTIONS[holes],
            "material": material("铜" if d["copper"] else "光纤"),
            "burial": burial("管块"),
            "owner": d["owner"],
            "year": d["year"],
            "holes_total": holes,
            "holes_used": min(d["used"][n], holes),
        }

    return lattice_network(
        lat,
        terrain,
        rng,
        LatticeNetCfg(
            "TX",
            "TX",
            "XX",
            -9.0,
            ew,
            ns,
            DEPTH_RANGE["XX"],
            attrs,
            manhole="通信井",
            manhole_spacing=60.0,
            well=(1.4, 2.0),
            end_manhole=True,
        ),
    )


def build_pipelines(lat: Lattice, terrain: Terrain, seed: int) -> PipelineSet:
    """All networks in file order: water, storm, sewage, gas, power, telecom."""
    nets = water_networks(lat, terrain, seed)
    nets.append(drainage_network(lat, terrain, seed, "storm"))
    nets.append(drainage_network(lat, terrain, seed, "sewage"))
    nets += [
        gas_network(lat, terrain, seed),
        power_network(lat, terrain, seed),
        telecom_network(lat, terrain, seed),
    ]
    out = PipelineSet(nets)
    out.number()
    return out
