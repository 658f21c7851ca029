"""Declarative base and column types shared by every table of the twin.

All tables live in one schema (``CIMTWIN_DB_SCHEMA``, default ``cim``); geometries are stored
in the configured metric storage CRS, with heights as Z where the object has a third dimension.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
SRID = get_settings().storage_srid

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """A model's :class:`~sqlalchemy.Table`.

    SQLAlchemy types ``__table__`` as any ``FromClause`` (a class may be mapped to a join or a
    subquery); every model of the twin is declared on a table of its own."""
    return cast(Table, model.__table__)


def schema_of(model: type[Base]) -> str:
    """The schema a model's table is in (every table has one: the metadata's default)."""
    schema = table_of(model).schema
    if schema is None:
        raise TypeError(f"table {table_of(model).name!r} has no schema")
    return schema


def geom(kind: str, srid: int = SRID, nullable: bool = False) -> Mapped:
    """A geometry column in the storage CRS with a GiST index."""
    return mapped_column(Geometry(kind, srid=srid, spatial_index=True), nullable=nullable)


def batch_fk() -> Mapped[int | None]:
    """Provenance: the import batch that wrote this row (NULL for rows made in the API)."""
    return mapped_column(
        BigInteger, ForeignKey(f"{SCHEMA}.import_batch.id", ondelete="SET NULL"), index=True
    )


def county_key() -> Mapped[str]:
    """The district key: the 6-digit GB/T 2260 county code of the row, by which a Citus
    cluster distributes the big tables (:mod:`cimtwin.db.layout`). Filled at import from the
    row's grid code or the data it belongs to; never NULL."""
    return mapped_column(
        String(6),
        CheckConstraint("county_code ~ '^[0-9]{6}$'", name="county_code"),
        nullable=False,
    )


def created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def json_object() -> Mapped[dict]:
    """JSONB defaulting to {} in the database too (COPY does not apply Python defaults)."""
    return mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


def json_array() -> Mapped[list]:
    return mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
