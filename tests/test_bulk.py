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


def test_points_and_lines_built_in_numpy_are_shapely_s_wkb_byte_for_byte() -> None:
    """The pipeline import builds its nodes' and straight pipes' WKB without GEOS: the bytes
    must be the ones shapely writes (same Z flag, order, counts), in 2D and 3D."""
    rng = np.random.default_rng(7)
    for dims in (2, 3):
        pts = rng.uniform(-1e6, 1e6, (50, dims))
        pts[3] = 0.0  # trailing zero bytes stay
        want = shapely.to_wkb(shapely.points(pts), output_dimension=dims, byte_order=1)
        assert bulk.points_wkb(pts).to_pylist() == list(want)
        lines = rng.uniform(-1e6, 1e6, (40, 2, dims))
        want = shapely.to_wkb(shapely.linestrings(lines), output_dimension=dims, byte_order=1)
        assert bulk.linestrings_wkb(lines).to_pylist() == list(want)


def test_arrow_hex_ewkb_matches_postgis_for_every_kind_and_slice(database_url: str) -> None:
    """:func:`bulk.ewkb_hex_arrow` splices the SRID into a whole array at once: each value
    must be the EWKB PostGIS writes for that geometry with the SRID, nulls stay null, and a
    slice of an Arrow array (offsets not at 0) gives its own values."""
    import pyarrow as pa

    geoms = np.array([shapely.from_wkt(w) for w in SHAPES] + [None], dtype=object)
    wkb = shapely.to_wkb(geoms, output_dimension=3, byte_order=1)
    hexes = bulk.ewkb_hex_arrow(wkb, srid=4547).to_pylist()
    assert hexes[-1] is None
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        for h, g in zip(hexes[:-1], geoms[:-1], strict=True):
            want = conn.execute(
                "SELECT encode(ST_AsEWKB(ST_SetSRID(ST_GeomFromWKB(%s), 4547), 'NDR'), 'hex')",
                (shapely.to_wkb(g, output_dimension=3, byte_order=1),),
            ).fetchone()[0]
            assert h == want, g.wkt
    sliced = pa.array(list(wkb), type=pa.binary()).slice(2, 3)
    assert bulk.ewkb_hex_arrow(sliced, srid=4547).to_pylist() == hexes[2:5]
    with pytest.raises(ValueError, match="shorter than its 5-byte header"):
        bulk.ewkb_hex_arrow(np.array([b"\x01\x01"], dtype=object))
