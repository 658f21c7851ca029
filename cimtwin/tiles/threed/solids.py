"""Closed low-poly solids for pipes, wells, markers and street furniture, in storage
coordinates (easting, northing, 1985 height), built many at a time with numpy.

Every builder returns a :class:`Solid`: positions, counter-clockwise triangles (seen from
outside) and the item each vertex belongs to, so a source maps items to feature rows and
colours in one step (:meth:`Solid.mesh`). Conventions, since the writer derives normals from
shared vertices (:mod:`.mesh`):

* round surfaces (tube and cylinder walls) share their ring vertices around and along, so
  they shade smooth; caps, box faces and octahedron faces have their own vertices (sharp);
* an n-gon section has its vertices ON the circle of the radius (inscribed), so a vertex is
  exactly the radius from the centre line and the flat sides fall at most
  ``r (1 - cos(pi / n))`` inside it (:func:`chord_error`);
* a bent tube is one mitred surface: at an inner vertex the ring lies in the bisector plane of
  the two segments, found by sliding the incoming ring along the incoming axis, so each ring
  vertex stays exactly the radius from both adjacent axes and the wall has no gap or overlap.
  Bends sharper than 90 degrees (the mitre would grow past 1.41 r) split the line into tubes
  that meet at the vertex instead;
* a box section keeps its width horizontal and its height plumb (culvert walls are vertical;
  the importer offsets the centre line vertically by h/2 too), mitred in plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from cimtwin.tiles.threed.mesh import Mesh

UP = np.array([0.0, 0.0, 1.0])
#: a bend whose directions' dot product falls below this splits the tube (90 degrees)
MITRE_LIMIT_DOT = 0.0


@dataclass
class Solid:
    """Triangles of ``n`` items: ``item[v]`` is the item of vertex ``v``."""

    positions: np.ndarray  # (v, 3) float64
    triangles: np.ndarray  # (t, 3) int64
    item: np.ndarray  # (v,) int64

    @staticmethod
    def empty() -> Solid:
        return Solid(np.empty((0, 3)), np.empty((0, 3), np.int64), np.empty(0, np.int64))

    @staticmethod
    def concat(parts: Sequence[Solid], items: Sequence[int] | None = None) -> Solid:
        """One solid of several; ``items`` renumbers part k's items all to ``items[k]``."""
        parts = list(parts)
        if not parts:
            return Solid.empty()
        offsets = np.cumsum([0] + [len(p.positions) for p in parts[:-1]])
        if items is None:
            item = np.concatenate([p.item for p in parts])
        else:
            item = np.concatenate(
                [np.full(len(p.positions), i, np.int64) for p, i in zip(parts, items, strict=True)]
            )
        return Solid(
            np.concatenate([p.positions for p in parts]).reshape(-1, 3),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]).reshape(
                -1, 3
            ),
            item,
        )

    def mesh(self, features: np.ndarray, colors: np.ndarray) -> Mesh:
        """The :class:`Mesh` of these items: ``features[i]`` is item i's feature row and
        ``colors[i]`` its RGBA."""
        features = np.asarray(features)
        colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 4)
        return Mesh(self.positions, self.triangles, features[self.item], colors[self.item])

    def signed_volume(self) -> float:
        """Volume enclosed (positive when the triangles face outwards): a check for tests."""
        p = self.positions - self.positions.mean(axis=0) if len(self.positions) else self.positions
        a, b, c = (p[self.triangles[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def chord_error(radius: float | np.ndarray, sides: int) -> float | np.ndarray:
    """How far an inscribed n-gon's sides fall inside the circle: r (1 - cos(pi / n))."""
    return radius * (1.0 - math.cos(math.pi / sides))


def sides_for(radius: float, tolerance_m: float, lo: int = 4, hi: int = 12) -> int:
    """The fewest sides (between ``lo`` and ``hi``) whose chord error is within tolerance."""
    for n in range(lo, hi + 1):
        if chord_error(radius, n) <= tolerance_m:
            return n
    return hi


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def _side_axis(t: np.ndarray) -> np.ndarray:
    """A unit vector across each direction ``t`` (n, 3): horizontal (t x up), or east for a
    plumb direction (a well, a pole), so sections of sloping pipes do not twist."""
    u = np.cross(t, UP)
    flat = np.linalg.norm(u, axis=1) < 1e-9
    u[flat] = [1.0, 0.0, 0.0]
    return _unit(u)


def _wall_triangles(rings: int, sides: int) -> np.ndarray:
    """Quads between consecutive rings of ``sides`` shared vertices, outward for rings built
    counter-clockwise about the axis direction."""
    i = np.arange(rings - 1)[:, None] * sides
    k = np.arange(sides)[None, :]
    a, b = i + k, i + (k + 1) % sides
    c, d = b + sides, a + sides
    return np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )


def _cap_triangles(sides: int, facing_forward: bool) -> np.ndarray:
    """A fan over one ring's own copy (counter-clockwise about the axis)."""
    k = np.arange(1, sides - 1)
    fan = np.stack([np.zeros_like(k), k, k + 1], -1)
    return fan if facing_forward else fan[:, [0, 2, 1]]


def tubes(a: np.ndarray, b: np.ndarray, radius: np.ndarray, sides: int = 8) -> Solid:
    """Straight capped tubes from ``a[i]`` to ``b[i]`` (n, 3) with ``radius[i]``: the common
    two-point pipe, wells and poles (a vertical tube is a cylinder), all at once."""
    a = np.asarray(a, np.float64).reshape(-1, 3)
    b = np.asarray(b, np.float64).reshape(-1, 3)
    n = len(a)
    r = np.broadcast_to(np.asarray(radius, np.float64), (n,))
    t = _unit(b - a)
    u = _side_axis(t)
    v = np.cross(t, u)
    ang = 2 * np.pi * np.arange(sides) / sides
    offs = r[:, None, None] * (
        np.cos(ang)[None, :, None] * u[:, None, :] + np.sin(ang)[None, :, None] * v[:, None, :]
    )  # (n, sides, 3)
    ring_a, ring_b = a[:, None, :] + offs, b[:, None, :] + offs
    per = np.concatenate([ring_a, ring_b, ring_a, ring_b], axis=1)  # walls, then cap copies
    tri = np.concatenate(
        [
            _wall_triangles(2, sides),
            _cap_triangles(sides, False) + 2 * sides,
            _cap_triangles(sides, True) + 3 * sides,
        ]
    )
    return _repeat(per, tri, n)


def _repeat(per_item: np.ndarray, tri: np.ndarray, n: int) -> Solid:
    """Items of the same topology: (n, v, 3) positions and one (t, 3) template."""
    nv = per_item.shape[1]
    tris = (tri[None, :, :] + (np.arange(n) * nv)[:, None, None]).reshape(-1, 3)
    return Solid(per_item.reshape(-1, 3), tris.astype(np.int64), np.repeat(np.arange(n), nv))


def vertical_cylinders(
    x: np.ndarray, y: np.ndarray, bottom: np.ndarray, top: np.ndarray, radius, sides: int = 8
) -> Solid:
    """Wells, chambers, poles, discs: plumb cylinders from ``bottom`` up to ``top``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a = np.column_stack([x, y, np.broadcast_to(bottom, x.shape)])
    b = np.column_stack([x, y, np.broadcast_to(top, x.shape)])
    return tubes(a, b, radius, sides)


def _clean(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 3)
    if len(p) < 2:
        return p
    keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
    return p[keep]


def _split_sharp(p: np.ndarray) -> list[np.ndarray]:
    """Runs of a polyline between bends sharper than the mitre limit."""
    if len(p) < 3:
        return [p]
    t = _unit(np.diff(p, axis=0))
    dots = np.einsum("ij,ij->i", t[:-1], t[1:])
    cuts = np.flatnonzero(dots < MITRE_LIMIT_DOT) + 1  # vertex indices where to split
    bounds = [0, *cuts.tolist(), len(p) - 1]
    return [p[s : e + 1] for s, e in zip(bounds[:-1], bounds[1:], strict=True)]


def tube(points: np.ndarray, radius: float, sides: int = 8) -> Solid:
    """A capped tube of ``radius`` along a 3D polyline, mitred at its inner vertices."""
    p = _clean(points)
    if len(p) < 2:
        return Solid.empty()
    if len(p) == 2:
        return tubes(p[:1], p[1:], np.array([radius]), sides)
    runs = _split_sharp(p)
    if len(runs) > 1:
        return Solid.concat([tube(run, radius, sides) for run in runs], [0] * len(runs))
    t = _unit(np.diff(p, axis=0))
    u = _side_axis(t[:1])[0]
    v = np.cross(t[0], u)
    ang = 2 * np.pi * np.arange(sides) / sides
    ring = p[0] + radius * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v)
    rings = [ring]
    for j in range(1, len(p)):
        normal = _unit(t[j - 1] + t[j]) if j < len(p) - 1 else t[j - 1]
        s = ((p[j] - ring) @ normal) / float(t[j - 1] @ normal)
        ring = ring + s[:, None] * t[j - 1]  # slide along the incoming axis onto the plane
        rings.append(ring)
    k = len(rings)
    walls = np.concatenate(rings)
    positions = np.concatenate([walls, rings[0], rings[-1]])
    tri = np.concatenate(
        [
            _wall_triangles(k, sides),
            _cap_triangles(sides, False) + k * sides,
            _cap_triangles(sides, True) + (k + 1) * sides,
        ]
    )
    return Solid(positions, tri.astype(np.int64), np.zeros(len(positions), np.int64))


def _orient(positions: np.ndarray, tri: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Flip the triangles whose normal points against ``outward`` (one vector per triangle)."""
    a, b, c = (positions[tri[:, k]] for k in range(3))
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), outward) < 0
    tri = tri.copy()
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def box_along(points: np.ndarray, width: float, height: float) -> Solid:
    """A closed rectangular section ``width`` x ``height`` (m) centred on a 3D polyline:
    duct banks and culverts (宽X高). Width horizontal, height plumb, mitred in plan."""
    p = _clean(points)
    if len(p) < 2:
        return Solid.empty()
    runs = _split_sharp(p)
    if len(runs) > 1:
        return Solid.concat([box_along(r, width, height) for r in runs], [0] * len(runs))
    t = _unit(np.diff(p, axis=0))
    seg_u = _side_axis(t)  # right-hand horizontal normal of each segment
    u = np.empty((len(p), 3))
    u[0], u[-1] = seg_u[0], seg_u[-1]
    if len(p) > 2:  # mitre in plan: the bisector, long enough to keep the walls' offset
        s = seg_u[:-1] + seg_u[1:]
        u[1:-1] = s / np.maximum(np.einsum("ij,ij->i", s, seg_u[1:]), 1e-9)[:, None]
    hw, hh = width / 2, height / 2
    corners = [  # around the section: bottom-right, top-right, top-left, bottom-left
        p + hw * u - hh * UP,
        p + hw * u + hh * UP,
        p - hw * u + hh * UP,
        p - hw * u - hh * UP,
    ]
    outward_dirs = [u, np.broadcast_to(UP, p.shape), -u, np.broadcast_to(-UP, p.shape)]
    pos, tris, outs = [], [], []
    n = len(p)
    base = 0
    for f in range(4):
        c0, c1 = corners[f], corners[(f + 1) % 4]
        face = np.concatenate([c0, c1])  # n vertices of one edge, then n of the other
        i = np.arange(n - 1)
        q = np.stack([i, i + 1, n + i + 1, n + i], -1)
        t2 = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]) + base
        mid = (outward_dirs[f][:-1] + outward_dirs[f][1:]) / 2
        pos.append(face)
        tris.append(t2)
        outs.append(np.concatenate([mid, mid]))
        base += 2 * n
    for end, sign in ((0, -1.0), (n - 1, 1.0)):
        cap = np.array([c[end] for c in corners])
        pos.append(cap)
        tris.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
        d = t[0] if end == 0 else t[-1]
        outs.append(np.array([sign * d, sign * d]))
        base += 4
    positions = np.concatenate(pos)
    tri = _orient(positions, np.concatenate(tris), np.concatenate(outs))
    return Solid(positions, tri.astype(np.int64), np.zeros(len(positions), np.int64))


def boxes_along(a: np.ndarray, b: np.ndarray, width: np.ndarray, height: np.ndarray) -> Solid:
    """Straight box sections from ``a[i]`` to ``b[i]``, ``width[i]`` x ``height[i]`` (m), all
    at once: :func:`box_along` for the common two-point duct bank or culvert."""
    a = np.asarray(a, np.float64).reshape(-1, 3)
    b = np.asarray(b, np.float64).reshape(-1, 3)
    n = len(a)
    hw = np.broadcast_to(np.asarray(width, np.float64), (n,))[:, None] / 2
    hh = np.broadcast_to(np.asarray(height, np.float64), (n,))[:, None] / 2
    u = _side_axis(_unit(b - a))
    up = np.broadcast_to(UP, (n, 3))
    # section corners (bottom-right, top-right, top-left, bottom-left) at both ends: (n, 8, 3)
    ends = []
    for p in (a, b):
        ends += [
            p + hw * u - hh * up,
            p + hw * u + hh * up,
            p - hw * u + hh * up,
            p - hw * u - hh * up,
        ]
    corners = np.stack(ends, axis=1)
    faces = [[f, (f + 1) % 4, 4 + (f + 1) % 4, 4 + f] for f in range(4)] + [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    per = corners[:, np.array(faces).reshape(-1), :]  # (n, 24, 3): own vertices per face
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    tri = np.concatenate([quad + 4 * f for f in range(6)])
    solid = _repeat(per, tri, n)
    centre = ((a + b) / 2)[solid.item[solid.triangles[:, 0]]]
    mid = solid.positions[solid.triangles].mean(axis=1)
    solid.triangles = _orient(solid.positions, solid.triangles, mid - centre)  # convex: outward
    return solid


def boxes(centre: np.ndarray, size: np.ndarray) -> Solid:
    """Axis-aligned boxes: ``centre`` (n, 3) and ``size`` (n, 3) east, north, up extents."""
    c = np.asarray(centre, np.float64).reshape(-1, 3)
    s = np.broadcast_to(np.asarray(size, np.float64), c.shape)
    n = len(c)
    # a unit cube's 6 faces, 4 own vertices each, counter-clockwise from outside
    faces = np.array(
        [
            [[1, -1, -1], [1, 1, -1], [1, 1, 1], [1, -1, 1]],
            [[-1, 1, -1], [-1, -1, -1], [-1, -1, 1], [-1, 1, 1]],
            [[1, 1, -1], [-1, 1, -1], [-1, 1, 1], [1, 1, 1]],
            [[-1, -1, -1], [1, -1, -1], [1, -1, 1], [-1, -1, 1]],
            [[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]],
            [[-1, 1, -1], [1, 1, -1], [1, -1, -1], [-1, -1, -1]],
        ],
        dtype=np.float64,
    ).reshape(-1, 3)
    per = c[:, None, :] + faces[None, :, :] * (s[:, None, :] / 2)
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    tri = np.concatenate([quad + 4 * f for f in range(6)])
    return _repeat(per, tri, n)


def octahedra(centre: np.ndarray, radius: float | np.ndarray) -> Solid:
    """Valve and crown markers: octahedra with their tips ``radius`` from the centre."""
    c = np.asarray(centre, np.float64).reshape(-1, 3)
    n = len(c)
    r = np.broadcast_to(np.asarray(radius, np.float64), (n,))
    tips = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
    faces = []
    for k in range(4):
        a, b = tips[k], tips[(k + 1) % 4]
        faces += [a, b, [0, 0, 1], b, a, [0, 0, -1]]
    unit = np.array(faces, dtype=np.float64)
    per = c[:, None, :] + unit[None, :, :] * r[:, None, None]
    tri = np.arange(24).reshape(8, 3)
    return _repeat(per, tri, n)


def slab(polygon: shapely.Geometry, bottom: float, top: float) -> Solid:
    """A flat closed prism over a (multi)polygon between two heights: green areas, squares."""
    parts = [g for g in shapely.get_parts(polygon) if not g.is_empty]
    if not parts:
        return Solid.empty()
    tri_geoms = shapely.get_parts(shapely.constrained_delaunay_triangles(polygon))
    tri_xy = shapely.get_coordinates(shapely.get_exterior_ring(tri_geoms)).reshape(-1, 4, 2)[:, :3]
    # counter-clockwise in plan for the top, reversed for the bottom
    area = (tri_xy[:, 1, 0] - tri_xy[:, 0, 0]) * (tri_xy[:, 2, 1] - tri_xy[:, 0, 1]) - (
        tri_xy[:, 2, 0] - tri_xy[:, 0, 0]
    ) * (tri_xy[:, 1, 1] - tri_xy[:, 0, 1])
    tri_xy[area < 0] = tri_xy[area < 0][:, [0, 2, 1]]
    m = len(tri_xy)
    flat = tri_xy.reshape(-1, 2)
    top_p = np.column_stack([flat, np.full(len(flat), top)])
    bot_p = np.column_stack([flat, np.full(len(flat), bottom)])
    idx = np.arange(3 * m).reshape(m, 3)
    pos = [top_p, bot_p]
    tris = [idx, idx[:, [0, 2, 1]] + 3 * m]
    base = 6 * m
    for poly in parts:
        for ring in [poly.exterior, *poly.interiors]:
            xy = np.asarray(ring.coords)[:, :2]
            a, b = xy[:-1], xy[1:]
            k = len(a)
            walls = np.concatenate(
                [
                    np.column_stack([a, np.full(k, bottom)]),
                    np.column_stack([b, np.full(k, bottom)]),
                    np.column_stack([b, np.full(k, top)]),
                    np.column_stack([a, np.full(k, top)]),
                ]
            )
            i = np.arange(k)
            q = np.stack([i, i + k, i + 2 * k, i + 3 * k], -1) + base
            wall_tri = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
            pos.append(walls)
            tris.append(wall_tri)
            base += 4 * k
    positions = np.concatenate(pos)
    tri = np.concatenate(tris)
    # walls: outward is away from the polygon's inside, which the ring's own orientation
    # does not say; decide per wall by a point just outside its middle
    wall = np.arange(len(tri)) >= 2 * m
    a, b, c = (positions[tri[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    mid = (a + b + c) / 3
    probe = mid[:, :2] + 1e-3 * _unit(normal[:, :2] + 1e-12)
    inside = shapely.contains_xy(polygon, probe[:, 0], probe[:, 1])
    flip = wall & inside
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return Solid(positions, tri.astype(np.int64), np.zeros(len(positions), np.int64))
