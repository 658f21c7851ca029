"""Land parcels (地块) with their planning controls."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, county_key, geom


class Parcel(Base):
    __tablename__ = "parcel"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    parcel_code: Mapped[str] = mapped_column(String(32), unique=True)
    land_use: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.land_use_class.code"), index=True
    )  # GB 50137 code
    area_m2: Mapped[float] = mapped_column(Float)
    planned_plot_ratio: Mapped[float | None] = mapped_column(Float)  # 容积率 (FAR)
    height_limit_m: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    county_code: Mapped[str] = county_key()
    geom: Mapped[object] = geom("MULTIPOLYGON")
    batch_id: Mapped[int | None] = batch_fk()
