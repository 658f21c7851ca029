"""The ground: digital elevation models (DEM) in the storage CRS, 1985 heights, in blocks.

A DEM is one ``terrain_dem`` row (its grid: origin, cell size, size, the source's nodata, the
extent polygon) and its cells in ``terrain_dem_block`` rows of ``BLOCK`` x ``BLOCK`` cells,
each a zlib-compressed little-endian float32 array (NaN where the source had no data). A block
also holds the first row and column of its east and south neighbours, so a mesh built from
one block meets the next without a gap.

Why bytea blocks and not PostGIS raster: ``postgis_raster`` is not among the extensions the
twin creates (:data:`cimtwin.db.bootstrap.EXTENSIONS`), the 3D tiler wants the numbers in
numpy anyway, and blocks with a GiST-indexed extent let a tile read only the cells under it
(what ``raster2pgsql -t`` tiling would give, without the extension).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, geom
from cimtwin.spatial.provenance import DATASET_CHARS

#: cells per block side; a block stores BLOCK + 1 nodes per side (the shared edge)
BLOCK = 64


class TerrainDem(Base):
    """One imported DEM: a north-up grid in the storage CRS; values are cell-centre heights."""

    __tablename__ = "terrain_dem"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(DATASET_CHARS), unique=True)
    source_file: Mapped[str] = mapped_column(Text)
    source_crs: Mapped[str] = mapped_column(Text)
    vertical_datum: Mapped[str] = mapped_column(String(64))
    origin_x: Mapped[float] = mapped_column(Float)  # west edge of the grid
    origin_y: Mapped[float] = mapped_column(Float)  # north edge of the grid
    cell_x: Mapped[float] = mapped_column(Float)  # cell width (m)
    cell_y: Mapped[float] = mapped_column(Float)  # cell height (m), positive
    width: Mapped[int] = mapped_column(Integer)  # cells
    height: Mapped[int] = mapped_column(Integer)
    block_size: Mapped[int] = mapped_column(Integer)
    nodata: Mapped[float | None] = mapped_column(Float)  # the source's nodata value
    min_height_m: Mapped[float] = mapped_column(Float)
    max_height_m: Mapped[float] = mapped_column(Float)
    extent: Mapped[object] = geom("POLYGON")
    batch_id: Mapped[int | None] = batch_fk()


class TerrainDemBlock(Base):
    """``BLOCK`` x ``BLOCK`` cells of a DEM (plus the shared east/south edge)."""

    __tablename__ = "terrain_dem_block"
    __table_args__ = (UniqueConstraint("dem_id", "block_row", "block_col"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dem_id: Mapped[int] = mapped_column(
        ForeignKey(f"{SCHEMA}.terrain_dem.id", ondelete="CASCADE"), index=True
    )
    block_row: Mapped[int] = mapped_column(Integer)
    block_col: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)  # nodes stored (cells + shared edge)
    cols: Mapped[int] = mapped_column(Integer)
    min_height_m: Mapped[float] = mapped_column(Float)
    max_height_m: Mapped[float] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    extent: Mapped[object] = geom("POLYGON")  # from the first to the last node centre
    anchor: Mapped[object] = geom("POINT")  # the 3D tiler's anchor: the block's centre
    batch_id: Mapped[int | None] = batch_fk()


def encode(values: np.ndarray) -> bytes:
    """A block's heights as stored: zlib of little-endian float32."""
    return zlib.compress(np.ascontiguousarray(values, dtype="<f4").tobytes(), 6)


def decode(data: bytes, rows: int, cols: int) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype="<f4").reshape(rows, cols)


@dataclass(frozen=True)
class Grid:
    """A north-up grid: node (r, c) is the centre of cell (r, c)."""

    origin_x: float
    origin_y: float
    cell_x: float
    cell_y: float

    def x(self, col: np.ndarray | float) -> np.ndarray:
        return self.origin_x + (np.asarray(col, dtype=np.float64) + 0.5) * self.cell_x

    def y(self, row: np.ndarray | float) -> np.ndarray:
        return self.origin_y - (np.asarray(row, dtype=np.float64) + 0.5) * self.cell_y


def split_blocks(values: np.ndarray, block: int = BLOCK) -> list[tuple[int, int, np.ndarray]]:
    """(block_row, block_col, nodes) for every block holding data; each block takes the first
    row and column of its east and south neighbours too."""
    h, w = values.shape
    out = []
    for br in range(0, max(1, -(-h // block))):
        for bc in range(0, max(1, -(-w // block))):
            part = values[br * block : (br + 1) * block + 1, bc * block : (bc + 1) * block + 1]
            if np.isfinite(part).any():
                out.append((br, bc, part))
    return out


def bilinear(grid: Grid, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Heights at storage points, bilinear between the four nearest cell centres (NaN outside
    the grid or next to a nodata cell): what GDAL's bilinear sampling gives."""
    fc = (np.asarray(x, dtype=np.float64) - grid.origin_x) / grid.cell_x - 0.5
    fr = (grid.origin_y - np.asarray(y, dtype=np.float64)) / grid.cell_y - 0.5
    h, w = values.shape
    c0 = np.clip(np.floor(fc).astype(np.int64), 0, max(w - 2, 0))
    r0 = np.clip(np.floor(fr).astype(np.int64), 0, max(h - 2, 0))
    u, v = fc - c0, fr - r0
    inside = (fc >= 0) & (fc <= w - 1) & (fr >= 0) & (fr <= h - 1)
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    z = (
        values[r0, c0] * (1 - u) * (1 - v)
        + values[r0, c1] * u * (1 - v)
        + values[r1, c0] * (1 - u) * v
        + values[r1, c1] * u * v
    )
    return np.where(inside, z, np.nan)
