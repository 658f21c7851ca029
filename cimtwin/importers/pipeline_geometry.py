"""Pipe centre lines: inner vertices taken from the source, brought into the storage CRS by the
same path as the survey points, and the 3D lines and lengths built from them.

A bent pipe's inner vertices (GIS line vertices, EPANET ``[VERTICES]``) are positions like its
end points: they get the same ``--local-transform``, CRS checks and transform, or the stored
line jumps between two coordinate systems and its length is nonsense.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import shapely
from pyproj import CRS

from cimtwin.importers.base import ImportOptions
from cimtwin.importers.layers import coordinates_to_storage
from cimtwin.importers.report import ERROR
from cimtwin.spatial import bulk

Vertices = list[tuple[float, float]]


def inner_vertices(g: shapely.Geometry | None) -> Vertices:
    """The (x, y) between a line's first and last point; the parts of a multi-line in order."""
    if g is None or g.is_empty:
        return []
    coords = shapely.get_coordinates(shapely.get_parts(g))
    return [tuple(c) for c in coords[1:-1]]


def vertices_to_storage(
    vertices: Sequence[Vertices],
    src: CRS,
    options: ImportOptions,
    flag: Callable[[np.ndarray, str, str, str], None],
) -> list[Vertices]:
    """Every line's inner vertices in the storage CRS; a line with an implausible vertex is
    flagged (``flag(mask over lines, rule, severity, message)``) like an implausible point."""
    counts = np.fromiter((len(v) for v in vertices), dtype=int, count=len(vertices))
    if not counts.any():
        return [[] for _ in vertices]
    flat = np.array([p[:2] for v in vertices for p in v], dtype=float)
    owner = np.repeat(np.arange(len(vertices)), counts)
    ex, ny, problems = coordinates_to_storage(flat[:, 0], flat[:, 1], src, options)
    for rule, mask, message in problems:
        lines = np.zeros(len(vertices), dtype=bool)
        lines[owner[mask]] = True
        flag(lines, rule, ERROR, f"a vertex of the line: {message}")
    parts = np.split(np.column_stack([ex, ny]), np.cumsum(counts)[:-1])
    return [[tuple(p) for p in part] for part in parts]


def centre_lines(
    ex: np.ndarray,
    ny: np.ndarray,
    fa: np.ndarray,
    fb: np.ndarray,
    za: np.ndarray,
    zb: np.ndarray,
    vertices: Sequence[Vertices],
) -> tuple[pa.BinaryArray, np.ndarray]:
    """3D lines (as little-endian WKB) from each segment's end nodes (and inner vertices, in
    the storage CRS, when the source has them), Z interpolated along the 2D length; and their
    3D lengths. Straight segments, the usual case for survey tables, are built in numpy at
    once (:func:`bulk.linestrings_wkb`), without a GEOS line each."""
    n = len(fa)
    lengths = np.empty(n)
    bent = np.array([len(v) > 0 for v in vertices], dtype=bool) if n else np.zeros(0, bool)
    straight = ~bent
    a = np.column_stack([ex[fa[straight]], ny[fa[straight]], za[straight]])
    b = np.column_stack([ex[fb[straight]], ny[fb[straight]], zb[straight]])
    lines = bulk.linestrings_wkb(np.stack([a, b], axis=1).reshape(len(a), 2, 3))
    lengths[straight] = np.linalg.norm(b - a, axis=1)
    if not bent.any():
        return lines, lengths
    out = np.empty(n, dtype=object)
    out[straight] = lines.to_numpy(zero_copy_only=False)
    for k in np.flatnonzero(bent):
        i, j = fa[k], fb[k]
        xy = np.asarray([(ex[i], ny[i]), *vertices[k], (ex[j], ny[j])], dtype=float)
        d = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        share = d / d[-1] if 0 < d[-1] < np.inf else np.zeros_like(d)  # along the plan length
        z = np.round(za[k] + (zb[k] - za[k]) * share, 4)
        coords = np.column_stack([xy, z])
        out[k] = bulk.to_wkb(shapely.LineString(coords), 3)
        lengths[k] = np.sum(np.linalg.norm(np.diff(coords, axis=0), axis=1))
    return pa.array(out, type=pa.binary()), lengths
