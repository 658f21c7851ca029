"""``cimtwin import dem FILE``: a GeoTIFF (or any single-band raster GDAL reads) as the ground.

The raster is read through rasterio, in any CRS: when that is not the storage CRS it is
reprojected (``rasterio.warp.reproject``, bilinear, at the resolution GDAL's
``calculate_default_transform`` picks) to a north-up grid in the storage CRS. Heights are
taken as 1985 national heights (EPSG:5737) as they are, without vertical conversion: a DEM in
another vertical datum must be converted before import (recorded as the batch's
``vertical_datum``). Nodata cells (the band's nodata value, NaN) stay holes. The whole DEM is
one dataset, replaced as a whole, recorded in ``import_batch`` with its file hash and its
extent as the change's bbox, so tile caches and ``build-3d --changed`` know what moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import shapely

from cimtwin.importers.base import ImportOptions, Prepared
from cimtwin.importers.report import Report
from cimtwin.importers.runner import ImportFailed
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.provenance import batch_dataset
from cimtwin.spatial.sql_toolkit import T
from cimtwin.spatial.terrain import (
    BLOCK,
    Grid,
    TerrainDem,
    TerrainDemBlock,
    encode,
    leaf_stride,
    split_blocks,
)

VERTICAL_DATUM = "EPSG:5737"  # heights are taken as 1985 national heights, unconverted
#: how far (degrees) a DEM may reach beyond the storage CRS's area of use
AREA_MARGIN_DEG = 0.5


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_dem(path: Path, crs_text: str | None) -> tuple[np.ndarray, Grid, str, float | None]:
    """The raster's first band as float32 heights in the storage CRS (NaN = no data), its grid,
    the source CRS's label and the source's nodata value. Bad input is an ImportFailed naming
    the file, on one line."""
    import rasterio
    from rasterio.crs import CRS as RioCRS
    from rasterio.errors import RasterioError
    from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

    storage = f"EPSG:{crs_mod.storage_srid()}"
    try:
        with rasterio.open(path) as src:
            if src.count < 1:
                raise ImportFailed(f"{path}: the raster has no band; nothing was written")
            if crs_text:
                src_crs = RioCRS.from_user_input(crs_mod.parse_crs(crs_text).to_wkt())
            elif src.crs is not None:
                src_crs = src.crs
            else:
                raise ImportFailed(
                    f"{path}: the raster has no CRS; pass --crs (e.g. --crs EPSG:4547); "
                    "nothing was written"
                )
            band = src.read(1).astype(np.float64)
            nodata = src.nodata
            src_transform, width, height = src.transform, src.width, src.height
            bounds = src.bounds
    except ImportFailed:
        raise
    except ValueError as exc:  # parse_crs
        raise ImportFailed(f"{path}: {_one_line(exc)}; nothing was written") from exc
    except (RasterioError, OSError) as exc:
        raise ImportFailed(
            f"{path}: not a raster GDAL can read ({_one_line(exc)}); nothing was written"
        ) from exc
    if nodata is not None:
        band[band == nodata] = np.nan
    band[~np.isfinite(band)] = np.nan
    try:
        west, south, east, north = transform_bounds(src_crs, "EPSG:4326", *bounds)
    except (RasterioError, ValueError) as exc:
        raise ImportFailed(
            f"{path}: cannot place the raster's extent on the globe ({_one_line(exc)}); "
            "nothing was written"
        ) from exc
    aou = crs_mod.storage_crs().area_of_use
    if aou is not None and not (
        west >= aou.west - AREA_MARGIN_DEG
        and east <= aou.east + AREA_MARGIN_DEG
        and south >= aou.south - AREA_MARGIN_DEG
        and north <= aou.north + AREA_MARGIN_DEG
    ):
        raise ImportFailed(
            f"{path}: the raster lies at {west:.3f}..{east:.3f} E, {south:.3f}..{north:.3f} N, "
            f"outside the storage CRS {storage} ({aou.name}); wrong --crs? nothing was written"
        )
    transform = src_transform
    north_up = transform.b == 0 and transform.d == 0 and transform.e < 0 and transform.a > 0
    if north_up and RioCRS.from_user_input(storage) == src_crs:
        values = band.astype(np.float32)
    else:
        transform, width, height = calculate_default_transform(
            src_crs, storage, width, height, *bounds
        )
        values = np.full((height, width), np.nan, dtype=np.float32)
        reproject(
            source=band.astype(np.float32),
            destination=values,
            src_transform=src_transform,
            src_crs=src_crs,
            src_nodata=np.nan,
            dst_transform=transform,
            dst_crs=storage,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    grid = Grid(float(transform.c), float(transform.f), float(transform.a), float(-transform.e))
    return values, grid, crs_mod.crs_label(crs_mod.parse_crs(src_crs.to_wkt())), nodata


def _box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class DemImporter:
    """One raster per import; the dataset is replaced as a whole."""

    kind = "dem"
    models = (TerrainDem, TerrainDemBlock)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        if len(paths) != 1:
            raise ImportFailed(
                f"dem: give one raster per import, not {len(paths)}; nothing was written"
            )
        path = paths[0]
        values, grid, src_label, nodata = read_dem(path, options.crs)
        finite = np.isfinite(values)
        h, w = values.shape
        extent = _box(
            grid.origin_x,
            grid.origin_y,
            grid.origin_x + w * grid.cell_x,
            grid.origin_y - h * grid.cell_y,
        )
        parts = split_blocks(values, BLOCK)
        stride, stride_error = leaf_stride([nodes for _, _, nodes in parts])
        blocks = []
        for br, bc, nodes in parts:
            r0, c0 = br * BLOCK, bc * BLOCK
            rows, cols = nodes.shape
            xa, xb = float(grid.x(c0)), float(grid.x(c0 + cols - 1))
            ya, yb = float(grid.y(r0)), float(grid.y(r0 + rows - 1))
            blocks.append(
                {
                    "block_row": br,
                    "block_col": bc,
                    "rows": rows,
                    "cols": cols,
                    "min_height_m": float(np.nanmin(nodes)),
                    "max_height_m": float(np.nanmax(nodes)),
                    "data": encode(nodes),
                    # a one-node-wide block still gets an area (half a cell around its nodes)
                    "extent": _box(
                        xa, ya, xb + grid.cell_x * (cols == 1), yb - grid.cell_y * (rows == 1)
                    ),
                    "anchor": shapely.Point(
                        grid.x(c0 + min(BLOCK, w - c0) / 2 - 0.5),
                        grid.y(r0 + min(BLOCK, h - r0) / 2 - 0.5),
                    ),
                }
            )
        n = int(finite.sum())
        dem: dict[str, Any] = {
            "source_file": str(path.resolve()),
            "source_crs": src_label,
            "vertical_datum": VERTICAL_DATUM,
            "origin_x": grid.origin_x,
            "origin_y": grid.origin_y,
            "cell_x": grid.cell_x,
            "cell_y": grid.cell_y,
            "width": w,
            "height": h,
            "block_size": BLOCK,
            "leaf_stride": stride,
            "leaf_error_m": stride_error,
            "nodata": nodata,
            "min_height_m": float(np.nanmin(values)) if n else 0.0,
            "max_height_m": float(np.nanmax(values)) if n else 0.0,
            "extent": extent,
        }
        return Prepared(
            format="raster",
            source_crs=src_label,
            feature_count=n,
            extra={"dem": dem, "blocks": blocks, "vertical_datum": VERTICAL_DATUM},
            bbox=tuple(float(v) for v in extent.bounds),  # type: ignore[arg-type]
        )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        from cimtwin.spatial.base import SRID

        dem = dict(prepared.extra["dem"])
        extent = dem.pop("extent")
        cols = list(dem)
        row = conn.execute(
            f"INSERT INTO {T.terrain_dem} (dataset, {', '.join(cols)}, extent, batch_id) "
            f"VALUES (%s, {', '.join(['%s'] * len(cols))}, "
            "ST_GeomFromWKB(%s, %s), %s) RETURNING id",
            (batch_dataset(conn, batch_id), *dem.values(), extent.wkb, SRID, batch_id),
        ).fetchone()
        assert row is not None
        dem_id = row[0]
        blocks = prepared.extra["blocks"]
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {T.terrain_dem_block} (dem_id, block_row, block_col, rows, cols, "
                "min_height_m, max_height_m, data, extent, anchor, batch_id) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, ST_GeomFromWKB(%s, %s), "
                "ST_GeomFromWKB(%s, %s), %s)",
                [
                    (
                        dem_id,
                        b["block_row"],
                        b["block_col"],
                        b["rows"],
                        b["cols"],
                        b["min_height_m"],
                        b["max_height_m"],
                        b["data"],
                        b["extent"].wkb,
                        SRID,
                        b["anchor"].wkb,
                        SRID,
                        batch_id,
                    )
                    for b in blocks
                ],
            )
        return {"terrain_dem": 1, "terrain_dem_block": len(blocks), "cells": prepared.feature_count}
