"""Prisms from footprints: the LOD1 solids of buildings and underground structures.

A prism is walls (one quad per ring edge), a roof and optionally a floor. Every face has its
own vertices (the writer computes normals from the triangles, so sharing a vertex between a
wall and the roof would round the edge). Triangles are counter-clockwise seen from outside:
exterior rings are oriented counter-clockwise and holes clockwise first, so the same edge rule
gives outward walls on both.

Footprints are triangulated with ``mapbox_earcut``, not ``shapely.constrained_delaunay_
triangles``: earcut answers with indices into the ring vertices we already hold (a roof of an
n-vertex footprint is n vertices and n - 2 + 2 * holes triangles, no matching of coordinates
back), and it is a small C++ routine that is several times faster on the many small footprints
of a district. Its weakness, invalid input, is handled before: :func:`polygons` repairs a
geometry with ``shapely.make_valid`` and keeps only its polygonal parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mapbox_earcut
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from cimtwin.tiles.threed.mesh import Mesh

#: vertices closer than this (m) are one (repeated points make zero-length walls)
SNAP_M = 1e-4


def polygons(geom: BaseGeometry | None) -> list[Polygon]:
    """The valid polygons of any geometry (multi, collection, self-intersecting ...), exterior
    counter-clockwise and holes clockwise, repeated points removed; [] when nothing of area."""
    if geom is None or geom.is_empty:
        return []
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    geom = shapely.remove_repeated_points(geom, SNAP_M)
    if not geom.is_valid:  # removing points can pinch a ring; repair once more
        geom = shapely.make_valid(geom)
    out: list[Polygon] = []
    for part in shapely.get_parts(geom):
        if isinstance(part, Polygon):
            if part.area > 0:
                out.append(shapely.orient_polygons(part, exterior_cw=False))
        elif hasattr(part, "geoms") or part.geom_type == "GeometryCollection":
            out.extend(polygons(part))
    return out


def _rings(poly: Polygon) -> list[np.ndarray]:
    """Ring coordinates (x, y) without the closing vertex: exterior first, then holes."""
    return [
        np.asarray(r.coords, dtype=np.float64)[:-1, :2] for r in [poly.exterior, *poly.interiors]
    ]


def triangulate(poly: Polygon) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n, 2), triangles (m, 3)) of a polygon with holes, every triangle
    counter-clockwise seen from above (+z)."""
    rings = [r for r in _rings(poly) if len(r) >= 3]
    if not rings:
        return np.empty((0, 2)), np.empty((0, 3), dtype=np.uint32)
    verts = np.concatenate(rings)
    ends = np.cumsum([len(r) for r in rings]).astype(np.uint32)
    # earcut works in double precision; subtracting the first vertex keeps it exact at
    # easting/northing magnitudes (5e5, 2.5e6 m)
    origin = verts[0]
    tri = np.asarray(mapbox_earcut.triangulate_float64(verts - origin, ends), dtype=np.uint32)
    tri = tri.reshape(-1, 3)
    if len(tri):
        a, b, c = verts[tri[:, 0]], verts[tri[:, 1]], verts[tri[:, 2]]
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
            c[:, 0] - a[:, 0]
        )
        flip = cross < 0
        tri[flip] = tri[flip][:, ::-1]
        tri = tri[cross != 0]
    return verts, tri


def prism(
    poly: Polygon, z0: float, z1: float, *, roof: bool = True, floor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 3), triangles (m, 3)) of the solid between heights z0 < z1 over a valid,
    oriented polygon (:func:`polygons`): walls always, roof and floor when asked."""
    pos: list[np.ndarray] = []
    tris: list[np.ndarray] = []
    n = 0
    for ring in _rings(poly):
        a = ring
        b = np.roll(ring, -1, axis=0)
        k = len(ring)
        # per edge: a0 b0 b1 a1; (a0, b0, b1) and (a0, b1, a1) face right of a->b, which is
        # outward for a counter-clockwise exterior and for a clockwise hole
        quad = np.empty((k, 4, 3))
        quad[:, 0, :2], quad[:, 0, 2] = a, z0
        quad[:, 1, :2], quad[:, 1, 2] = b, z0
        quad[:, 2, :2], quad[:, 2, 2] = b, z1
        quad[:, 3, :2], quad[:, 3, 2] = a, z1
        base = n + 4 * np.arange(k, dtype=np.uint32)[:, None]
        t = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
        pos.append(quad.reshape(-1, 3))
        tris.append(t)
        n += 4 * k
    if roof or floor:
        verts, tri = triangulate(poly)
        for wanted, z, order in ((roof, z1, [0, 1, 2]), (floor, z0, [0, 2, 1])):
            if not wanted or not len(tri):
                continue
            p = np.empty((len(verts), 3))
            p[:, :2], p[:, 2] = verts, z
            pos.append(p)
            tris.append(tri[:, order] + n)
            n += len(verts)
    if not pos:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.uint32)
    return np.concatenate(pos), np.concatenate(tris).astype(np.uint32)


def extrude(
    geom: BaseGeometry | None, z0: float, z1: float, *, roof: bool = True, floor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prism` of every polygon of any footprint geometry, in one vertex array;
    empty when the geometry has no area or the height range is empty."""
    return extrude_polygons(polygons(geom), z0, z1, roof=roof, floor=floor)


def extrude_polygons(
    polys: list[Polygon], z0: float, z1: float, *, roof: bool = True, floor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extrude` of polygons already repaired and oriented by :func:`polygons`."""
    pos: list[np.ndarray] = []
    tris: list[np.ndarray] = []
    n = 0
    if not z1 > z0:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.uint32)
    for poly in polys:
        p, t = prism(poly, z0, z1, roof=roof, floor=floor)
        pos.append(p)
        tris.append(t + n)
        n += len(p)
    if not pos:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.uint32)
    return np.concatenate(pos), np.concatenate(tris).astype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Solids with a level of detail: what buildings and underground structures share


@dataclass
class Part:
    """One prism of a feature: heights, which caps it has, its colour."""

    z0: float
    z1: float
    color: tuple[int, int, int, int]
    roof: bool = True
    floor: bool = False


@dataclass
class Solid:
    """A feature drawn as prisms over one footprint (a building: above and below ground)."""

    footprint: BaseGeometry
    parts: list[Part]
    #: the footprint repaired and oriented (:func:`polygons`), once for all its prisms
    polygons: list[Polygon] = field(init=False)

    def __post_init__(self) -> None:
        self.polygons = polygons(self.footprint)

    @property
    def size(self) -> float:
        """Its largest dimension (m): the diameter of the footprint's smallest enclosing circle
        or its height range, whichever is larger; a far view that leaves it out is off by this."""
        return float(sizes([self])[0])


def sizes(solids: list[Solid]) -> np.ndarray:
    """:attr:`Solid.size` of many solids at once (GEOS vectorised)."""
    if not solids:
        return np.empty(0)
    diameter = 2.0 * shapely.minimum_bounding_radius(np.array([s.footprint for s in solids]))
    extent = np.array(
        [
            max(p.z1 for p in s.parts) - min(p.z0 for p in s.parts) if s.parts else 0.0
            for s in solids
        ]
    )
    return np.maximum(diameter, extent)


#: a simplified footprint keeps at most this many vertices (its tolerance grows until it does)
MAX_SIMPLIFIED_VERTICES = 64
#: densification of the Hausdorff measure: each segment is sampled at this fraction of its length
HAUSDORFF_DENSIFY = 0.02


def _simplify_polygon(poly: Polygon, tolerance_m: float) -> Polygon:
    """One polygon simplified: a quadrilateral (or less) is kept as it is, and a simplification
    that would leave a triangle of a larger polygon is replaced by the polygon's oriented
    envelope (a far view shows a block as a box, not as a wedge)."""
    n = shapely.get_num_coordinates(poly)
    if n <= 5:
        return poly
    tol = tolerance_m
    simple = shapely.simplify(poly, tol, preserve_topology=True)
    while shapely.get_num_coordinates(simple) > MAX_SIMPLIFIED_VERTICES:
        tol *= 2.0
        simple = shapely.simplify(poly, tol, preserve_topology=True)
    if shapely.get_num_coordinates(simple) < 5 or simple.is_empty:
        envelope = shapely.oriented_envelope(poly)
        if isinstance(envelope, Polygon) and envelope.area > 0:
            return envelope
    return simple


def simplified(footprint: BaseGeometry, tolerance_m: float) -> tuple[BaseGeometry, float]:
    """The footprint simplified to about ``tolerance_m`` (per polygon, topology kept, at most
    :data:`MAX_SIMPLIFIED_VERTICES` vertices: the tolerance doubles until it fits), and the
    measured Hausdorff distance (m) between it and the full footprint (densified, so long
    edges are sampled too)."""
    parts, error = simplified_polygons(polygons(footprint), tolerance_m)
    return shapely.MultiPolygon(parts), error


def simplified_polygons(parts: list[Polygon], tolerance_m: float) -> tuple[list[Polygon], float]:
    """:func:`simplified` of polygons from :func:`polygons` (and polygons again)."""
    if not parts:
        return [], 0.0
    simple = [_simplify_polygon(p, tolerance_m) for p in parts]
    if all(a is b for a, b in zip(simple, parts, strict=True)):
        return parts, 0.0
    error = float(
        shapely.hausdorff_distance(
            shapely.MultiPolygon(simple), shapely.MultiPolygon(parts), densify=HAUSDORFF_DENSIFY
        )
    )
    return polygons(shapely.MultiPolygon(simple)), error


@dataclass
class LodChoice:
    """Which solids a tile shows at a tolerance, their footprints, and the measured error."""

    kept: list[int]  # indices into the solids, in their order
    footprints: list[list[Polygon]]
    error_m: float


def choose(solids: list[Solid], tolerance_m: float, budget: int) -> LodChoice:
    """The level of detail of a tile.

    Tolerance 0: every solid, full footprints, error 0. Tolerance t > 0 (a parent for far
    views): solids whose :attr:`Solid.size` is under t are left out, and of the rest only the
    ``budget`` largest are kept (so a parent over any box holds at most ``budget`` features of
    at most :data:`MAX_SIMPLIFIED_VERTICES` vertices each: bounded); the largest solid is
    always kept. Kept footprints are simplified (:func:`simplified`); heights are kept. The
    error is the largest of the kept footprints' Hausdorff distances and the sizes of the
    solids left out (each is missing by its whole size).
    """
    if tolerance_m <= 0:
        return LodChoice(list(range(len(solids))), [s.polygons for s in solids], 0.0)
    size = sizes(solids)
    order = sorted(range(len(solids)), key=lambda i: (-size[i], i))
    kept = [i for i in order if size[i] >= tolerance_m][:budget] or order[:1]
    kept_set = set(kept)
    error = max((float(size[i]) for i in range(len(solids)) if i not in kept_set), default=0.0)
    kept.sort()
    footprints = []
    for i in kept:
        fp, e = simplified_polygons(solids[i].polygons, tolerance_m)
        footprints.append(fp)
        error = max(error, e)
    return LodChoice(kept, footprints, error)


def solids_mesh(solids: list[Solid], choice: LodChoice) -> Mesh:
    """One mesh of the chosen solids; vertex feature = the solid's row in the tile (its rank
    among the kept ones)."""
    meshes = []
    for row, (i, fp) in enumerate(zip(choice.kept, choice.footprints, strict=True)):
        for part in solids[i].parts:
            pos, tri = extrude_polygons(fp, part.z0, part.z1, roof=part.roof, floor=part.floor)
            if len(tri):
                n = len(pos)
                meshes.append(
                    Mesh(pos, tri, np.full(n, row), np.tile(np.asarray(part.color), (n, 1)))
                )
    return Mesh.concat(meshes)
