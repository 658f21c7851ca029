"""What a 3D source is to the tileset builder.

The builder owns the tree (a quadtree over a fixed grid, so a tile's key and box do not move
between builds) and asks a source three things: where its data are, how many features a box
holds, and the content of a box at full detail or simplified to a tolerance. Every feature
has one anchor point (a point on a footprint's surface, a pipe's midpoint, ...) and lives in
the one leaf whose box holds that point (boxes are half-open: x0 <= x < x1), so no feature is
drawn twice and a changed feature dirties the tiles whose box meets its extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import psycopg

from cimtwin.tiles.threed.mesh import PropertyType, TileContent

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the storage CRS


@dataclass(frozen=True)
class Bounds:
    """Where a source's data are: a storage-CRS box and a 1985 height range."""

    box: Box
    hmin: float
    hmax: float


@dataclass(frozen=True)
class PropertySpec:
    """One property of a source's class in the tileset schema."""

    name: str
    type: PropertyType
    description: str = ""


class Source(Protocol):
    """One tileset's source of triangles."""

    #: tileset id and folder name (``buildings``), and its title for ``GET /3dtiles``
    id: str
    title: str
    #: the OGC API Features collection whose ids the feature ids are (None: no collection)
    layer: str | None
    #: the class of the tileset's schema and its properties (besides ``id``, always there)
    class_name: str
    properties: tuple[PropertySpec, ...]
    #: a leaf holds at most this many features (its content stays bounded)
    max_features_per_tile: int

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        """The extent of the data; None when there are none."""
        ...

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        """How many features are anchored in ``box``."""
        ...

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        """The features anchored in ``box``: at full detail when ``tolerance_m`` is 0 (a leaf),
        else simplified or merged to about that tolerance for far views (a parent), with the
        measured largest distance from the full geometry as ``error_m``. None when empty."""
        ...
