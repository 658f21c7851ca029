"""Administrative and work-grid hierarchy: street > community > work grid; named districts.

Codes follow the county(6)+street(3)+community(3)+grid(2 or 3) scheme, so a grid's code
starts with its community's, which starts with its street's.
"""

from __future__ import annotations

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
