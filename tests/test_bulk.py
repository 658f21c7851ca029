"""Bulk-load helpers: the hex EWKB that COPY sends must be what PostGIS reads back."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely

from cimtwin.db.engine import libpq_dsn
from cimtwin.spatial import bulk

SHAPES = [
    "POINT Z (500000.5 2500000.25 3.5)",
    "LINESTRING Z (0 0 -1.5, 2 2 -2.5)",
    "MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5)))",
    "GEOMETRYCOLLECTION (POINT (1 1), LINESTRING (0 0, 1 1))",
    "POINT EMPTY",
]


@pytest.mark.parametrize("dims", [2, 3])
def test_geometry_hex_is_ewkb_postgis_reads_with_the_srid(database_url: str, dims: int) -> None:
    geoms = np.array([shapely.from_wkt(w) for w in SHAPES] + [None], dtype=object)
    hexes = bulk.geometry_hex(geoms, dims=dims, srid=4547)
    assert hexes[-1] is None
    expected = shapely.force_2d(geoms[:-1]) if dims == 2 else geoms[:-1]
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        for h, want in zip(hexes[:-1], expected, strict=True):
            srid, wkb = conn.execute(
                "SELECT ST_SRID(g), ST_AsBinary(g) FROM (SELECT %s::geometry AS g) s", (h,)
            ).fetchone()
            assert srid == 4547
            got = shapely.from_wkb(bytes(wkb))
            assert shapely.equals_identical(got, want), (h, got.wkt, want.wkt)  # Z included
