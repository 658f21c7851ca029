"""Terrain and the road lattice around Shenzhen North Station.

The district is a lattice of road centre lines.  Lattice nodes are intersections, lattice
edges are road stretches, the cells are blocks.  The station hall sits on a "superblock":
the road stretches that would cross it are cut, so nothing (pipes included) runs under it.
All coordinates are EPSG:4547 (easting, northing) rounded to the millimetre, so polygons
built from the same lattice lines share exact vertices and tile without slivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np

from cimtwin.samples import names
from cimtwin.samples.spec import (
    LONGHUA,
    STATION_LAT,
    STATION_LON,
    STORAGE_EPSG,
    County,
    ScaleSpec,
    substream,
)
from cimtwin.spatial.crs import transformer

MAIN_WIDTH = 40.0
SECONDARY_WIDTHS = (20.0, 22.0, 24.0)
# Admin areas reach this far beyond the outer road centre lines, so the outer half of the
# boundary roads (and what is under and along them) still lies inside a work grid.
OUTER_MARGIN = 25.0


def round_rect(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A rectangle (x0, y0, x1, y1) with its coordinates rounded to the millimetre."""
    x0, y0, x1, y1 = rect
    return round(x0, 3), round(y0, 3), round(x1, 3), round(y1, 3)


class Terrain:
    """Smooth ground elevation (1985 datum): ~75 m at the station, falling to the south-west.

    The trend (0.25 % towards the west and the south) is what lets gravity sewers keep a
    workable depth; the long-wave undulation is small enough never to reverse it for long.
    """

    def __init__(self, seed: int, cx: float, cy: float) -> None:
        rng = substream(seed, "terrain")
        self.cx, self.cy = cx, cy
        self.z0 = 75.0
        self.grade = 0.0025
        self.phases = rng.uniform(0.0, 2 * np.pi, size=3)

    @overload
    def z(self, x: float, y: float) -> float: ...
    @overload
    def z(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float: ...

    def z(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        """Ground elevation at (easting, northing), unrounded."""
        dx = np.asarray(x, dtype=float) - self.cx
        dy = np.asarray(y, dtype=float) - self.cy
        p = self.phases
        wave = 0.3 * np.sin(2 * np.pi * dx / 2600.0 + p[0]) * np.cos(
            2 * np.pi * dy / 3100.0 + p[1]
        ) + 0.15 * np.sin(2 * np.pi * (dx + dy) / 1900.0 + p[2])
        out = self.z0 + self.grade * (dx + dy) + wave
        return float(out) if np.ndim(out) == 0 else out

    @overload
    def ground(self, x: float, y: float) -> float: ...
    @overload
    def ground(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float: ...

    def ground(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        """Ground elevation rounded to the centimetre, as every file writes it."""
        out = np.round(self.z(x, y), 2)
        return float(out) if np.ndim(out) == 0 else out


@dataclass
class Road:
    """One road line of the lattice (all its stretches share name, width and class)."""

    axis: str  # "ns" (constant easting) or "ew" (constant northing)
    index: int
    coord: float
    width: float
    main: bool
    name: str
    build_year: int


@dataclass
class Lattice:
    """Road lattice: line coordinates, roads, which stretches exist, the station superblock."""

    spec: ScaleSpec
    xs: np.ndarray  # eastings of the N-S road lines, nx+1
    ys: np.ndarray  # northings of the E-W road lines, ny+1
    ns_roads: list[Road]
    ew_roads: list[Road]
    ew_edge: np.ndarray  # [j, i]: E-W stretch on line j from node i to i+1 exists
    ns_edge: np.ndarray  # [i, j]: N-S stretch on line i from node j to j+1 exists
    cx: float
    cy: float
    station_node: tuple[int, int]
    superblock: tuple[int, int, int, int]  # node ranges i0, i1, j0, j1 (inclusive)
    county: County = LONGHUA  # whose codes the district's objects carry

    @property
    def nx(self) -> int:
        return self.spec.nx

    @property
    def ny(self) -> int:
        return self.spec.ny

    def ext_xs(self) -> np.ndarray:
        """Admin-area cell edges in x: centre lines, the outer two pushed out by the margin."""
        out = self.xs.copy()
        out[0] -= OUTER_MARGIN
        out[-1] += OUTER_MARGIN
        return np.round(out, 3)

    def ext_ys(self) -> np.ndarray:
        out = self.ys.copy()
        out[0] -= OUTER_MARGIN
        out[-1] += OUTER_MARGIN
        return np.round(out, 3)

    def in_superblock(self, i: int, j: int) -> bool:
        """True for blocks (cell i, j) merged into the station superblock."""
        i0, i1, j0, j1 = self.superblock
        return i0 <= i < i1 and j0 <= j < j1

    def net_rect(self, i0: int, j0: int, i1: int, j1: int) -> tuple[float, float, float, float]:
        """Land between the road lines i0..i1, j0..j1 minus half the bounding roads' widths."""
        return (
            round(self.xs[i0] + self.ns_roads[i0].width / 2, 3),
            round(self.ys[j0] + self.ew_roads[j0].width / 2, 3),
            round(self.xs[i1] - self.ns_roads[i1].width / 2, 3),
            round(self.ys[j1] - self.ew_roads[j1].width / 2, 3),
        )

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Buildable blocks as node ranges (i0, j0, i1, j1); the superblock is one of them."""
        out = []
        i0, i1, j0, j1 = self.superblock
        for j in range(self.ny):
            for i in range(self.nx):
                if self.in_superblock(i, j):
                    if (i, j) == (i0, j0):
                        out.append((i0, j0, i1, j1))
                    continue
                out.append((i, j, i + 1, j + 1))
        return out

    def road_stretches(self) -> list[tuple[Road, float, float, float, float]]:
        """Every existing road stretch as (road, x0, y0, x1, y1), west/south end first."""
        out = []
        for road in self.ew_roads:
            j = road.index
            for i in range(self.nx):
                if self.ew_edge[j, i]:
                    out.append(
                        (road, float(self.xs[i]), road.coord, float(self.xs[i + 1]), road.coord)
                    )
        for road in self.ns_roads:
            i = road.index
            for j in range(self.ny):
                if self.ns_edge[i, j]:
                    out.append(
                        (road, road.coord, float(self.ys[j]), road.coord, float(self.ys[j + 1]))
                    )
        return out


def station_xy() -> tuple[float, float]:
    """Station centre in EPSG:4547, from its published longitude/latitude."""
    x, y = transformer(4490, STORAGE_EPSG).transform(STATION_LON, STATION_LAT)
    return round(float(x), 3), round(float(y), 3)


def _lines(
    rng: np.random.Generator, n: int, mean: float, jitter: float, centre: float, k: int
) -> np.ndarray:
    """n+1 line coordinates with jittered spacing and line ``k`` exactly at ``centre``."""
    steps = mean + rng.uniform(-jitter, jitter, size=n)
    pos = np.concatenate([[0.0], np.cumsum(steps)])
    return np.round(pos - pos[k] + centre, 3)


def max_extent(spec: ScaleSpec) -> tuple[float, float]:
    """Upper bound of a lattice's admin extent (width, height) over every seed: what a city
    spaces its districts by so that they never overlap."""
    return (
        spec.nx * (spec.block_w + spec.jitter) + 2 * OUTER_MARGIN,
        spec.ny * (spec.block_h + spec.jitter) + 2 * OUTER_MARGIN,
    )


def build_lattice(
    spec: ScaleSpec,
    seed: int,
    county: County = LONGHUA,
    centre: tuple[float, float] | None = None,
) -> Lattice:
    """The road lattice for a scale: lines, roads with names and widths, the cut superblock;
    centred on ``centre`` (EPSG:4547, rounded to the mm), by default the North Station."""
    rng = substream(seed, "layout")
    name_rng = substream(seed, "names")
    cx, cy = station_xy() if centre is None else (round(centre[0], 3), round(centre[1], 3))
    ic, jc = spec.nx // 2, spec.ny // 2
    xs = _lines(rng, spec.nx, spec.block_w, spec.jitter, cx, ic)
    ys = _lines(rng, spec.ny, spec.block_h, spec.jitter, cy, jc)
    ns_main = [(i - ic) % spec.main_every == 0 for i in range(spec.nx + 1)]
    ew_main = [(j - jc) % spec.main_every == 0 for j in range(spec.ny + 1)]
    all_names = names.road_names(name_rng, spec.nx + spec.ny + 2, ns_main + ew_main)

    def make(axis: str, k: int, coord: float, main: bool, name: str) -> Road:
        width = MAIN_WIDTH if main else float(rng.choice(SECONDARY_WIDTHS))
        year = int(rng.integers(1998, 2012)) if not main else int(rng.integers(2004, 2012))
        return Road(axis, k, float(coord), width, main, name, year)

    ns_roads = [make("ns", i, xs[i], ns_main[i], all_names[i]) for i in range(spec.nx + 1)]
    ew_roads = [
        make("ew", j, ys[j], ew_main[j], all_names[spec.nx + 1 + j]) for j in range(spec.ny + 1)
    ]
    # Station superblock: 4 blocks E-W by 2 N-S around the station node.
    i0, i1, j0, j1 = ic - 2, ic + 2, jc - 1, jc + 1
    ew_edge = np.ones((spec.ny + 1, spec.nx), dtype=bool)
    ns_edge = np.ones((spec.nx + 1, spec.ny), dtype=bool)
    for j in range(j0 + 1, j1):
        ew_edge[j, i0:i1] = False
    for i in range(i0 + 1, i1):
        ns_edge[i, j0:j1] = False
    return Lattice(
        spec,
        xs,
        ys,
        ns_roads,
        ew_roads,
        ew_edge,
        ns_edge,
        cx,
        cy,
        (ic, jc),
        (i0, i1, j0, j1),
        county,
    )
