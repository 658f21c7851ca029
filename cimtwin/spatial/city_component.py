"""City components (城市部件): managed street objects, each with a 16-digit id and a class."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, geom


class CityComponent(Base):
    __tablename__ = "city_component"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    component_id: Mapped[str] = mapped_column(String(16), unique=True)  # county+class+seq
    class_code: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.component_class.code"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(128))
    dept_authority: Mapped[str | None] = mapped_column(String(32))  # 主管部门
    dept_owner: Mapped[str | None] = mapped_column(String(32))  # 权属单位
    dept_maintainer: Mapped[str | None] = mapped_column(String(32))  # 养护单位
    status: Mapped[str | None] = mapped_column(String(16))  # 完好, 破损, 丢失, 占用 ...
    elevation_m: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    geom: Mapped[object] = geom("GEOMETRY")  # points mostly; lines and polygons for some classes
    batch_id: Mapped[int | None] = batch_fk()
