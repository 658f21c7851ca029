"""The sample's DEM: the generator's own terrain function as a GeoTIFF (``dem.tif``).

Every ground elevation in the sample (building bases, pipe points, wells) comes from
:class:`~cimtwin.samples.layout.Terrain`; the DEM is that same function at cell centres, so
what stands on the ground in the files stands on the DEM too. 5 m cells, float32, EPSG:4547,
1985 heights, deflate with the floating-point predictor (a smooth surface packs small).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cimtwin.samples.layout import Lattice, Terrain
from cimtwin.samples.spec import STORAGE_EPSG

CELL_M = 5.0
#: the DEM reaches this far beyond the outer admin boundary
MARGIN_M = 50.0


def dem_grid(lat: Lattice, cell: float = CELL_M) -> tuple[float, float, int, int]:
    """(west, north, columns, rows) of the sample DEM, snapped to whole cells."""
    xs, ys = lat.ext_xs(), lat.ext_ys()
    west = math.floor((xs[0] - MARGIN_M) / cell) * cell
    east = math.ceil((xs[-1] + MARGIN_M) / cell) * cell
    south = math.floor((ys[0] - MARGIN_M) / cell) * cell
    north = math.ceil((ys[-1] + MARGIN_M) / cell) * cell
    return west, north, round((east - west) / cell), round((north - south) / cell)


def write_dem(path: Path, terrain: Terrain, lat: Lattice, cell: float = CELL_M) -> int:
    """Write ``dem.tif``; returns its number of cells."""
    import rasterio
    from rasterio.transform import from_origin

    west, north, cols, rows = dem_grid(lat, cell)
    x = west + (np.arange(cols) + 0.5) * cell
    y = north - (np.arange(rows) + 0.5) * cell
    z = np.asarray(terrain.z(x[None, :], y[:, None]), dtype=np.float32)
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": 1,
        "dtype": "float32",
        "crs": f"EPSG:{STORAGE_EPSG}",
        "transform": from_origin(west, north, cell, cell),
        "compress": "deflate",
        "predictor": 3,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z, 1)
        dst.update_tags(1, units="m", vertical_datum="1985 National Height Datum (EPSG:5737)")
    return rows * cols
