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
#: a 3D leaf may leave out DEM nodes while its mesh stays this close (m) to every node: the
#: centimetre the twin's heights are given in (a smooth DEM then needs far fewer triangles)
LEAF_TOLERANCE_M = 0.01


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
    # every leaf_stride-th node (a power of two dividing BLOCK) keeps the DEM's mesh within
    # leaf_error_m (<= LEAF_TOLERANCE_M) of every node; one stride for the whole DEM, so
    # neighbouring 3D leaves share their edge vertices
    leaf_stride: Mapped[int] = mapped_column(Integer)
    leaf_error_m: Mapped[float] = mapped_column(Float)
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


def sample_rows(n: int, stride: int) -> np.ndarray:
    """Every ``stride``-th node index of ``n``, the last one always kept (edges stay put)."""
    return np.unique(np.r_[np.arange(0, n, stride), n - 1]) if n else np.empty(0, np.int64)


def grid_error(values: np.ndarray, ri: np.ndarray, ci: np.ndarray) -> float:
    """The largest vertical difference (m) between the DEM nodes ``values`` and the triangles of
    the coarse grid on rows ``ri`` and columns ``ci`` (each quad split south-west to
    north-east), over the nodes a drawn quad covers."""
    if len(ri) < 2 or len(ci) < 2:
        return 0.0
    rr = np.arange(values.shape[0])
    cc = np.arange(values.shape[1])
    k = np.clip(np.searchsorted(ri, rr, "right") - 1, 0, len(ri) - 2)
    m = np.clip(np.searchsorted(ci, cc, "right") - 1, 0, len(ci) - 2)
    r0, r1 = ri[k][:, None], ri[k + 1][:, None]
    c0, c1 = ci[m][None, :], ci[m + 1][None, :]
    v = (rr[:, None] - r0) / (r1 - r0)
    u = (cc[None, :] - c0) / (c1 - c0)
    nw, ne = values[r0, c0], values[r0, c1]
    sw, se = values[r1, c0], values[r1, c1]
    upper = nw + u * (ne - nw) + v * (sw - nw)  # triangle NW, SW, NE: u + v <= 1
    lower = se + (1 - u) * (sw - se) + (1 - v) * (ne - se)  # triangle SW, SE, NE
    mesh = np.where(u + v <= 1, upper, lower)
    diff = np.abs(mesh - values)
    diff = diff[np.isfinite(diff)]
    return float(diff.max()) if diff.size else 0.0


def leaf_stride(
    blocks: list[np.ndarray], tolerance_m: float = LEAF_TOLERANCE_M
) -> tuple[int, float]:
    """The largest power-of-two stride (up to BLOCK) whose grid stays within ``tolerance_m``
    of every node of every block, and its measured error. Strides divide BLOCK, so coarse
    quads never cross a block edge and the blocks can be measured one by one."""
    stride, error = 1, 0.0
    while stride < BLOCK:
        trial = max(
            (
                grid_error(
                    b, sample_rows(b.shape[0], 2 * stride), sample_rows(b.shape[1], 2 * stride)
                )
                for b in blocks
            ),
            default=0.0,
        )
        if trial > tolerance_m:
            break
        stride, error = 2 * stride, trial
    return stride, error
