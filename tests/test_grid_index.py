"""进格入块 in memory: :class:`GridIndex` puts each geometry in the grid a point on its surface
falls in, the lowest code on a shared boundary, None outside; points, lines, areas, missing
geometries and WKB mixed in one call give what each alone gives."""

from __future__ import annotations

import numpy as np
import shapely

from cimtwin.spatial.admin_grid import GridIndex

# two grids side by side, sharing the edge x = 10; listed out of code order on purpose
GRIDS = GridIndex(["B2", "A1"], [shapely.box(10, 0, 20, 10), shapely.box(0, 0, 10, 10)])


def test_each_kind_goes_to_the_grid_it_lies_in() -> None:
    geoms = np.array(
        [
            shapely.Point(5, 5),  # A1
            shapely.Point(15, 5),  # B2
            shapely.Point(10, 5),  # on the shared edge: the lower code
            shapely.Point(50, 50),  # outside
            None,
            shapely.LineString([(12, 1), (18, 1)]),  # B2
            shapely.box(1, 1, 3, 3),  # A1
            shapely.MultiPoint([(16, 6), (17, 7)]),  # B2
        ],
        dtype=object,
    )
    want = ["A1", "B2", "A1", None, None, "B2", "A1", "B2"]
    assert GRIDS.assign(geoms).tolist() == want
    # one at a time gives the same: a mixed call changes nothing for the points
    assert [GRIDS.assign(geoms[i : i + 1])[0] for i in range(len(geoms))] == want
    # and WKB (as the importers hold geometries) the same as GEOS geometries
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geoms], dtype=object)
    assert GRIDS.assign(wkb).tolist() == want


def test_the_geometries_given_are_left_as_they_were() -> None:
    line = shapely.LineString([(12, 1), (18, 1)])
    geoms = np.array([shapely.Point(5, 5), line], dtype=object)
    GRIDS.assign(geoms)
    assert geoms[1] is line


def test_wkb_in_an_arrow_array_goes_where_the_same_wkb_as_bytes_goes(monkeypatch) -> None:
    """A pipe network's nodes are held as an Arrow binary array until written."""
    import pyarrow as pa

    from cimtwin.spatial import admin_grid

    points = [shapely.Point(5, 5), None, shapely.Point(15, 5), shapely.Point(50, 50)] * 3
    wkb = [None if g is None else shapely.to_wkb(g) for g in points]
    want = GRIDS.assign(np.array(wkb, dtype=object)).tolist()
    assert want[:4] == ["A1", None, "B2", None]
    assert GRIDS.assign(pa.array(wkb, type=pa.binary())).tolist() == want
    # in several chunks, and from a chunked array: the same
    monkeypatch.setattr(admin_grid, "WKB_CHUNK", 5)
    assert GRIDS.assign(pa.chunked_array([wkb[:7], wkb[7:]], pa.binary())).tolist() == want
    assert GridIndex([], []).assign(pa.array(wkb, type=pa.binary())).tolist() == [None] * 12
