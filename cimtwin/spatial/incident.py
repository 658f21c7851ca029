"""Incidents reported by citizens, inspectors or sensors; edited through the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import Base, batch_fk, county_key, created_at, geom, json_object

#: the life of an incident, in order; the first three are "open" (still being handled)
INCIDENT_STATUSES = ("reported", "dispatched", "in_progress", "resolved", "closed")
OPEN_STATUSES = INCIDENT_STATUSES[:3]
FIRST_STATUS = INCIDENT_STATUSES[0]
#: the workflow: one step at a time; the only way back is reopening a resolved incident
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "reported": ("dispatched",),
    "dispatched": ("in_progress",),
    "in_progress": ("resolved",),
    "resolved": ("closed", "in_progress"),
    "closed": (),
}
WORKFLOW_TEXT = (
    "reported -> dispatched -> in_progress -> resolved -> closed; resolved -> in_progress reopens"
)
assert tuple(TRANSITIONS) == INCIDENT_STATUSES


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (
        CheckConstraint("severity BETWEEN 1 AND 4", name="severity"),
        CheckConstraint(
            "status IN (" + ",".join(f"'{s}'" for s in INCIDENT_STATUSES) + ")",
            name="status",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    incident_type: Mapped[str] = mapped_column(String(32), index=True)  # pipe_burst, fire ...
    severity: Mapped[int] = mapped_column(SmallInteger)  # 1 low .. 4 critical
    status: Mapped[str] = mapped_column(String(16), default=FIRST_STATUS, index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = created_at()
    elevation_m: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    county_code: Mapped[str] = county_key()
    attributes: Mapped[dict[str, Any]] = json_object()
    geom: Mapped[object] = geom("POINT")
    batch_id: Mapped[int | None] = batch_fk()
