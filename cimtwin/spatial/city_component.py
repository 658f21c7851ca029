"""City components (城市部件): managed street objects, each with a 16-digit id and a class.

The table is partitioned by import batch: a district delivers half a million components at a
time, and loading them into a bare partition that is indexed and key-checked in bulk, then
attached, is several times faster than inserting into an indexed table (see
:mod:`cimtwin.spatial.staging`). Replacing a dataset drops its partition.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Sequence, String
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, county_key, geom

_ID = Sequence("city_component_id_seq", schema=SCHEMA, metadata=Base.metadata)


class CityComponent(Base):
    __tablename__ = "city_component"
    __table_args__ = (
        Index("ix_city_component_id", "id"),
        {"postgresql_partition_by": "LIST (batch_id)"},
    )

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey(f"{SCHEMA}.import_batch.id"), primary_key=True
    )
    id: Mapped[int] = mapped_column(
        BigInteger, _ID, server_default=_ID.next_value(), primary_key=True
    )
    # county + class + sequence; unique across batches, checked when a batch is attached
    component_id: Mapped[str] = mapped_column(String(16), index=True)
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
    county_code: Mapped[str] = county_key()
    geom: Mapped[object] = geom("GEOMETRY")  # points mostly; lines and polygons for some classes
