"""Administrative and work-grid hierarchy: street > community > work grid; named districts.

Codes follow the county(6)+street(3)+community(3)+grid(2 or 3) scheme, so a grid's code
starts with its community's, which starts with its street's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely
from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, geom


class Street(Base):
    __tablename__ = "street"

    code: Mapped[str] = mapped_column(String(9), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    geom: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()


class Community(Base):
    __tablename__ = "community"

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    street_code: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.street.code", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    geom: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()


class WorkGrid(Base):
    """The unit of city management (单元网格): every report and component belongs to one."""

    __tablename__ = "work_grid"

    code: Mapped[str] = mapped_column(String(15), primary_key=True)
    community_code: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.community.code", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    area_m2: Mapped[float] = mapped_column(Float)
    officer: Mapped[str | None] = mapped_column(String(64))
    geom: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()


class District(Base):
    """A named area queried as a whole, e.g. the North Station business district."""

    __tablename__ = "district"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))  # business_district, core_area, ...
    description: Mapped[str | None] = mapped_column(Text)
    geom: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()


#: WKB geometries made into GEOS ones at a time by :meth:`GridIndex.assign`
WKB_CHUNK = 50_000


class GridIndex:
    """Work grids in memory for 进格入块: which grid each position falls in, vectorised.

    A position on a shared boundary goes to the lowest grid code, so answers are stable.
    """

    def __init__(self, codes: list[str], geoms: list) -> None:
        order = np.argsort(np.asarray(codes, dtype=object))
        self.codes = np.asarray(codes, dtype=object)[order]
        self.geoms = np.asarray(geoms, dtype=object)[order]
        self.tree = shapely.STRtree(self.geoms)

    @classmethod
    def load(cls, conn) -> GridIndex:
        """From an open psycopg connection (sync), in the storage CRS."""
        rows = conn.execute(f'SELECT code, ST_AsBinary(geom) FROM "{SCHEMA}".work_grid').fetchall()
        return cls([r[0] for r in rows], [shapely.from_wkb(r[1]) for r in rows])

    def __len__(self) -> int:
        return len(self.codes)

    def assign(self, geoms):
        """Grid code per geometry (by a point on its surface); None where outside every grid.

        ``geoms`` may be WKB (as an importer holds them): made into geometries a chunk at a
        time, also from an Arrow binary array (a pipe network's nodes: no bytes object per
        node held while the import writes)."""
        if isinstance(geoms, pa.Array | pa.ChunkedArray):
            out = np.full(len(geoms), None, dtype=object)
            for at in range(0, len(geoms) if len(self) else 0, WKB_CHUNK):
                part = geoms.slice(at, WKB_CHUNK).to_numpy(zero_copy_only=False)
                out[at : at + WKB_CHUNK] = self.assign(part)
            return out
        geoms = np.asarray(geoms, dtype=object)
        out = np.full(len(geoms), None, dtype=object)
        if not len(self) or not len(geoms):
            return out
        if isinstance(next((g for g in geoms if g is not None), None), bytes):
            for at in range(0, len(geoms), WKB_CHUNK):
                out[at : at + WKB_CHUNK] = self.assign(shapely.from_wkb(geoms[at : at + WKB_CHUNK]))
            return out
        # points as they are, a point on the surface of the others: made for every geometry,
        # it copied a district's 500 000 components (0.4 s) for its 5 000 lines and areas
        pts = geoms
        others = np.flatnonzero(shapely.get_type_id(geoms) > 0)  # None is -1, a point 0
        if len(others):
            pts = geoms.copy()
            pts[others] = shapely.point_on_surface(geoms[others])
        src, hit = self.tree.query(pts, predicate="intersects")
        if len(src):
            # lowest code wins: hits are sorted by tree index = by code
            order = np.lexsort((hit, src))
            src, hit = src[order], hit[order]
            first = np.unique(src, return_index=True)[1]
            out[src[first]] = self.codes[hit[first]]
        return out
