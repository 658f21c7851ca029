"""Import batches: where every dataset in the twin came from (file, hash, CRS, counts, who)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Integer,
    Sequence,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, json_array, json_object

#: numbers every change notification (``notify_change``, migration 0004): a shared tile cache
#: compares the last number it applied with this to find changes made while nobody listened
CHANGE_SEQ = Sequence("change_seq", schema=SCHEMA, metadata=Base.metadata)
#: the channel imports and incident edits announce their changes on (``notify_change``)
CHANGE_CHANNEL = "cimtwin_change"

BATCH_STATUSES = ("running", "succeeded", "failed", "replaced")
#: longest dataset name the table holds
DATASET_CHARS = 200


class ImportBatch(Base):
    """One run of an importer over one dataset; rows it wrote point back here."""

    __tablename__ = "import_batch"
    __table_args__ = (
        CheckConstraint("status IN ('running','succeeded','failed','replaced')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # pipelines, components, grids ...
    # the replace key for re-imports
    dataset: Mapped[str] = mapped_column(String(DATASET_CHARS), index=True)
    source_files: Mapped[list[str]] = json_array()
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the files, in order
    format: Mapped[str] = mapped_column(String(64))
    source_crs: Mapped[str] = mapped_column(Text)
    vertical_datum: Mapped[str | None] = mapped_column(String(64))
    feature_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    warning_count: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = json_object()  # per table
    options: Mapped[dict[str, Any]] = json_object()
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    imported_by: Mapped[str] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)


class TwinMetadata(Base):
    """Facts fixed when the schema was created (storage CRS, height datum), checked at start-up."""

    __tablename__ = "twin_metadata"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def batch_dataset(conn: psycopg.Connection, batch_id: int) -> str:
    """The dataset an import batch writes (importers tag their rows with it)."""
    row = conn.execute(
        f'SELECT dataset FROM "{SCHEMA}"."{ImportBatch.__tablename__}" WHERE id = %s', (batch_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no import batch {batch_id}")
    return row[0]
