"""Gravity drainage (storm YS, sewage WS): tree networks with inverts falling in flow order.

The lattice is cut into catchments.  In each, pipes on the E-W roads flow west into a trunk on
the catchment's westmost N-S road, which flows south to an outfall (出水口).  Every road
stretch that is not on that tree still gets a pipe: it starts at a head manhole a few metres
from its upstream intersection and flows west/south into the junction at its other end.  So
every manhole has at most one outgoing pipe: the network is a tree, never bifurcating.

Inverts are set in one pass in flow order: each pipe falls at >= 0.3 % and keeps the minimum
cover for its size; the terrain falls to the south-west, which keeps depths within 1.5-5 m.
Diameters grow downstream with the length of pipe upstream (the storm trunk may become a box
culvert).  A few lines are written end-to-start with 流向 -1 to exercise importers.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from cimtwin.samples.layout import Lattice, Terrain
from cimtwin.samples.network import Network, Pipe, burial, material, minor_type
from cimtwin.samples.spec import substream

MIN_SLOPE = 0.003
MAX_DEPTH = 5.0
MIN_DEPTH = 1.5
BOX_SECTION, BOX_HEIGHT = "2000X1500", 1.5


@dataclass(frozen=True)
class DrainCfg:
    prefix: str
    minor: str
    offset: float
    manhole: str
    owner: str
    sizes: tuple[tuple[float, int], ...]  # (upstream pipe length below which, diameter)
    largest: int | None  # diameter beyond the table; None = box culvert
    pe_max: int  # plastic pipes up to this diameter, concrete above
    outfall_remark: str


DRAIN = {
    "storm": DrainCfg(
        "YS",
        "YS",
        3.0,
        "雨水井",
        "龙华区水务局",
        ((200, 300), (500, 400), (900, 500), (1400, 600), (2000, 800), (2600, 1000), (3200, 1200)),
        None,
        400,
        "排入河道",
    ),
    "sewage": DrainCfg(
        "WS",
        "WS",
        -3.0,
        "污水井",
        "深圳市水务集团",
        ((500, 300), (1500, 400), (3000, 500), (5000, 600)),
        800,
        500,
        "接入污水截流干管",
    ),
}


def trunk_columns(lat: Lattice, width: int) -> list[int]:
    """Westmost N-S line of each catchment; never a line cut by the station superblock."""
    i0, i1, _, _ = lat.superblock
    out = [0]
    while out[-1] + width < lat.nx:
        nxt = out[-1] + width
        if i0 < nxt < i1:
            nxt = min((c for c in (i0, i1) if c > out[-1]), key=lambda c: abs(c - nxt))
        out.append(nxt)
    return out


def _size(cfg: DrainCfg, upstream: float) -> tuple[int | None, str | None, float]:
    """(diameter, section, height in m) for a pipe with this much pipe upstream."""
    for limit, d in cfg.sizes:
        if upstream < limit:
            return d, None, d / 1000.0
    if cfg.largest is None:
        return None, BOX_SECTION, BOX_HEIGHT
    return cfg.largest, None, cfg.largest / 1000.0


def drainage_network(lat: Lattice, terrain: Terrain, seed: int, kind: str) -> Network:
    """Build the storm or sewage tree for the lattice."""
    cfg = DRAIN[kind]
    minor_type("PS", cfg.minor)
    rng = substream(seed, kind)
    net = Network(cfg.prefix, "PS", cfg.minor)
    o = cfg.offset
    cols = trunk_columns(lat, lat.spec.catchment_blocks[0])
    rows = list(range(0, lat.ny, lat.spec.catchment_blocks[1]))
    years = {
        (r.axis, r.index): r.build_year + int(rng.integers(0, 3))
        for r in lat.ew_roads + lat.ns_roads
    }

    def has_w(i: int, j: int) -> bool:
        return i > 0 and bool(lat.ew_edge[j, i - 1])

    def has_s(i: int, j: int) -> bool:
        return j > 0 and bool(lat.ns_edge[i, j - 1])

    def has_e(i: int, j: int) -> bool:
        return i < lat.nx and bool(lat.ew_edge[j, i])

    def has_n(i: int, j: int) -> bool:
        return j < lat.ny and bool(lat.ns_edge[i, j])

    def pos(i: int, j: int) -> tuple[float, float]:
        return float(lat.xs[i]) + o, float(lat.ys[j]) + o

    node_idx: dict[tuple[int, int], int] = {}
    parent: dict[tuple[int, int], tuple[int, int] | None] = {}
    for j in range(lat.ny + 1):
        for i in range(lat.nx + 1):
            if not (has_w(i, j) or has_e(i, j) or has_s(i, j) or has_n(i, j)):
                continue
            a = cols[bisect.bisect_right(cols, i) - 1]
            b = rows[bisect.bisect_right(rows, j) - 1]
            if i > a and has_w(i, j):
                parent[(i, j)] = (i - 1, j)
            elif j > b and has_s(i, j):
                parent[(i, j)] = (i, j - 1)
            else:
                parent[(i, j)] = None
            road = lat.ew_roads[j] if (has_w(i, j) or has_e(i, j)) else lat.ns_roads[i]
            terminal = parent[(i, j)] is None
            node_idx[(i, j)] = net.point(
                "",
                "出水口" if terminal else cfg.manhole,
                *pos(i, j),
                terrain,
                0.0,
                remark=cfg.outfall_remark if terminal else "",
                road=road.name,
            )

    road_of: list[tuple[str, int]] = []  # per pipe: road key

    def chain(
        start: int,
        end: int,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        key: tuple[str, int],
        name: str,
    ) -> None:
        length = math.hypot(x1 - x0, y1 - y0)
        n = math.ceil(length / float(rng.uniform(55.0, 70.0)))
        prev = start
        for m in range(1, n + 1):
            if m < n:
                t = m / n
                nxt = net.point(
                    "", cfg.manhole, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, terrain, 0.0, road=name
                )
            else:
                nxt = end
            net.pipes.append(
                Pipe(
                    prev,
                    nxt,
                    "PS",
                    cfg.minor,
                    None,
                    None,
                    "",
                    "",
                    cfg.owner,
                    years[key],
                    flow=1,
                    road=name,
                )
            )
            road_of.append(key)
            prev = nxt

    edges = [
        (lat.ew_roads[j], (i, j), (i + 1, j))
        for j in range(lat.ny + 1)
        for i in range(lat.nx)
        if lat.ew_edge[j, i]
    ]
    edges += [
        (lat.ns_roads[i], (i, j), (i, j + 1))
        for i in range(lat.nx + 1)
        for j in range(lat.ny)
        if lat.ns_edge[i, j]
    ]
    for road, u, v in edges:  # u is the west/south end, v the east/north end
        (xu, yu), (xv, yv) = pos(*u), pos(*v)
        key = (road.axis, road.index)
        if parent[v] == u:
            chain(node_idx[v], node_idx[u], xv, yv, xu, yu, key, road.name)
        else:  # not on the tree: own head manhole a few metres from v, flowing to u
            h = float(rng.uniform(4.0, 6.0))
            length = math.hypot(xv - xu, yv - yu)
            hx, hy = xv + (xu - xv) * h / length, yv + (yu - yv) * h / length
            head = net.point("", cfg.manhole, hx, hy, terrain, 0.0, road=road.name)
            chain(head, node_idx[u], hx, hy, xu, yu, key, road.name)

    _size_and_level(net, cfg, rng)
    n_rev = max(2, round(0.02 * len(net.pipes)))
    for k in sorted(rng.choice(len(net.pipes), size=n_rev, replace=False).tolist()):
        net.pipes[k].reverse = True
    return net


def _size_and_level(net: Network, cfg: DrainCfg, rng: np.random.Generator) -> None:
    """Diameters from upstream pipe length, then invert depths in one flow-order pass."""
    npts = len(net.points)
    out_pipe = [-1] * npts
    in_pipes: list[list[int]] = [[] for _ in range(npts)]
    for q, p in enumerate(net.pipes):
        if out_pipe[p.a] != -1:
            raise RuntimeError(f"{cfg.prefix}: point {p.a} has two outgoing pipes")
        out_pipe[p.a] = q
        in_pipes[p.b].append(q)
    indeg = [len(v) for v in in_pipes]
    queue = deque(k for k in range(npts) if indeg[k] == 0)
    order: list[int] = []
    while queue:
        k = queue.popleft()
        order.append(k)
        q = out_pipe[k]
        if q >= 0:
            t = net.pipes[q].b
            indeg[t] -= 1
            if indeg[t] == 0:
                queue.append(t)
    if len(order) != npts:
        raise RuntimeError(f"{cfg.prefix}: drainage network has a cycle")

    lengths = [net.length(p) for p in net.pipes]
    acc = [0.0] * len(net.pipes)
    height = [0.0] * len(net.pipes)
    for k in order:
        q = out_pipe[k]
        if q < 0:
            continue
        acc[q] = lengths[q] + sum(acc[r] for r in in_pipes[k])
        d, section, h = _size(cfg, acc[q])
        p = net.pipes[q]
        p.diameter, p.section, height[q] = d, section, h
        p.material = material("混凝土" if d is None or d > cfg.pe_max else "聚乙烯塑料")
        p.burial = burial("管沟" if section else "直埋")

    slope = MIN_SLOPE + rng.uniform(0.0, 0.0006, size=len(net.pipes))
    invert = [0.0] * npts
    for k in order:
        pt = net.points[k]
        at = in_pipes[k] + ([out_pipe[k]] if out_pipe[k] >= 0 else [])
        min_depth = max(MIN_DEPTH, 0.7 + max(height[q] for q in at))
        if in_pipes[k]:
            inv = min(invert[net.pipes[q].a] - slope[q] * lengths[q] for q in in_pipes[k])
            inv = min(inv, pt.ground - min_depth)
        else:
            inv = pt.ground - min_depth - float(rng.uniform(0.0, 0.3))
        depth = math.ceil(round((pt.ground - inv) * 100, 6)) / 100  # round down the invert
        if depth > MAX_DEPTH:
            raise RuntimeError(f"{cfg.prefix}: depth {depth} m > {MAX_DEPTH} at ({pt.x}, {pt.y})")
        pt.depth = depth
        invert[k] = pt.ground - depth
        _feature(net, k, in_pipes[k], out_pipe[k])
        if pt.appurt != "出水口":
            pt.well = round(depth + float(rng.uniform(0.05, 0.3)), 2)


def _feature(net: Network, k: int, ins: list[int], out: int) -> None:
    """三通/四通 at junctions, 弯头 at bends, 变径 where the size changes on a straight run."""
    at = ins + ([out] if out >= 0 else [])
    pt = net.points[k]
    if len(at) >= 3:
        pt.feature = "三通" if len(at) == 3 else "四通"
    elif len(at) == 2 and pt.appurt != "出水口":  # an outfall's own outlet is not surveyed
        p, q = net.pipes[at[0]], net.pipes[at[1]]
        a = net.points[p.a if p.b == k else p.b]
        b = net.points[q.a if q.b == k else q.b]
        cross = (a.x - pt.x) * (b.y - pt.y) - (a.y - pt.y) * (b.x - pt.x)
        if abs(cross) > 1e-3 * math.hypot(a.x - pt.x, a.y - pt.y) * math.hypot(
            b.x - pt.x, b.y - pt.y
        ):
            pt.feature = "弯头"
        elif (p.diameter, p.section) != (q.diameter, q.section):
            pt.feature = "变径"
