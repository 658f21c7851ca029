"""Underground pipeline network: survey points (nodes) and the pipes between them (segments).

Elevations are in the storage height datum. The 3D geometry is the pipe's centre line:
CJJ 61 burial depth is measured to the pipe top for pressure pipes and cable ducts and to the
invert (inside bottom) for gravity drainage; ``depth_ref`` records which, and the centre
elevation follows from it and the pipe's size.

Nodes and segments are stored one partition per import batch, as city components are: a
district's network loads into bare partitions that are indexed and key-checked in bulk, and
re-importing it attaches the new partitions and detaches and drops the old ones, instead of
deleting and re-inserting a district's pipes row by row under every index. The topology keys
are composite for that reason: a segment references its end nodes by (batch_id, id) inside
its own batch, and a valve references its pipe and node by (network_batch_id, id), so every
key is checked within one pair of partitions. Ids still come from one sequence per table, so
an id alone names one row everywhere (the OGC API and 3D Tiles feature ids).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Sequence,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import SCHEMA, Base, batch_fk, county_key, geom

_NODE_ID = Sequence("pipeline_node_id_seq", schema=SCHEMA, metadata=Base.metadata)
_SEGMENT_ID = Sequence("pipeline_segment_id_seq", schema=SCHEMA, metadata=Base.metadata)
_PARTITIONED = {"postgresql_partition_by": "LIST (batch_id)"}


def _in_batch(batch: str, column: str, table: str, name: str) -> ForeignKeyConstraint:
    """A topology key checked inside one batch: (batch, column) -> table (batch_id, id)."""
    return ForeignKeyConstraint(
        [batch, column],
        [f"{SCHEMA}.{table}.batch_id", f"{SCHEMA}.{table}.id"],
        name=name,
        ondelete="CASCADE",
    )


#: a pipe's end nodes are in its own batch: (constraint, column) of the keys from each
#: segment partition to the node partition of the same batch. Not keys of the parents: a
#: parent's key is checked at ATTACH against every network's nodes (0.44 s with one network
#: in the twin, 0.94 s with five); a partition's reads only its own batch's.
SEGMENT_END_KEYS = (
    ("fk_pipeline_segment_from_node", "from_node_id"),
    ("fk_pipeline_segment_to_node", "to_node_id"),
)


def segment_end_keys_sql(segments: str, nodes: str) -> str:
    """``ALTER TABLE`` adding :data:`SEGMENT_END_KEYS` to the segment partition ``segments``
    (a quoted, qualified name) towards the node partition ``nodes`` of its batch."""
    adds = ", ".join(
        f"ADD CONSTRAINT {name} FOREIGN KEY (batch_id, {column}) "
        f"REFERENCES {nodes} (batch_id, id) ON DELETE CASCADE"
        for name, column in SEGMENT_END_KEYS
    )
    return f"ALTER TABLE {segments} {adds}"


def _batch_key() -> Mapped[int]:
    """The partition key: the import batch that wrote the row, part of the primary key."""
    return mapped_column(BigInteger, ForeignKey(f"{SCHEMA}.import_batch.id"), primary_key=True)


def pipe_size_mm_sql(alias: str) -> str:
    """SQL for the size (mm) of the pipe row ``alias``: its diameter when surveyed, else the
    height of its section (the importers' ``size_mm``; NULL when neither is known).

    One definition, so that a pipe with both a diameter and a section (a culvert) has the
    same size in every query that places its top or bottom."""
    if not alias.isidentifier():
        raise ValueError(f"not a table alias: {alias!r}")
    return f"coalesce({alias}.diameter_mm, {alias}.height_mm)"


class PipelineNode(Base):
    """A survey point (物探点): feature point or appurtenance (valve, hydrant, manhole)."""

    __tablename__ = "pipeline_node"
    __table_args__ = (
        # one dataset per batch, so this is the survey's point numbers unique per dataset
        UniqueConstraint("batch_id", "point_no"),
        Index("ix_pipeline_node_id", "id"),
        Index("ix_pipeline_node_dataset_point_no", "dataset", "point_no"),
        _PARTITIONED,
    )

    batch_id: Mapped[int] = _batch_key()
    id: Mapped[int] = mapped_column(
        BigInteger, _NODE_ID, server_default=_NODE_ID.next_value(), primary_key=True
    )
    dataset: Mapped[str] = mapped_column(String(200))
    point_no: Mapped[str] = mapped_column(String(32))  # 物探点号
    network: Mapped[str] = mapped_column(String(4), index=True)  # CJJ 61 major letters
    subtype: Mapped[str | None] = mapped_column(ForeignKey(f"{SCHEMA}.pipeline_type.code"))
    feature: Mapped[str | None] = mapped_column(String(32))  # 特征: 三通, 弯头, 变径 ...
    appurtenance: Mapped[str | None] = mapped_column(String(32), index=True)  # 阀门, 消防栓 ...
    ground_elevation_m: Mapped[float | None] = mapped_column(Float)
    well_depth_m: Mapped[float | None] = mapped_column(Float)  # 井深
    valve_state: Mapped[str | None] = mapped_column(String(8))  # open / closed, for valves
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    county_code: Mapped[str] = county_key()
    geom: Mapped[object] = geom("POINTZ")  # ground position, Z = ground elevation


class PipelineSegment(Base):
    """One pipe between two survey points (管段)."""

    __tablename__ = "pipeline_segment"
    __table_args__ = (
        CheckConstraint("from_node_id <> to_node_id", name="not_a_loop"),
        CheckConstraint("flow_direction IN (-1, 0, 1)", name="flow_direction"),
        CheckConstraint("depth_ref IN ('top','centre','invert')", name="depth_ref"),
        CheckConstraint("link_type IN ('pipe','valve','pump')", name="link_type"),
        # end nodes in the segment's own batch: keys of each pair of partitions, not of the
        # parents (SEGMENT_END_KEYS)
        Index("ix_pipeline_segment_id", "id"),
        _PARTITIONED,
    )

    batch_id: Mapped[int] = _batch_key()
    id: Mapped[int] = mapped_column(
        BigInteger, _SEGMENT_ID, server_default=_SEGMENT_ID.next_value(), primary_key=True
    )
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    network: Mapped[str] = mapped_column(String(4), index=True)
    subtype: Mapped[str | None] = mapped_column(ForeignKey(f"{SCHEMA}.pipeline_type.code"))
    from_node_id: Mapped[int] = mapped_column(BigInteger, index=True)
    to_node_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # EPANET models carry valves and pumps as links; survey tables carry valves as points
    link_type: Mapped[str] = mapped_column(String(8), default="pipe", server_default="pipe")
    source_id: Mapped[str | None] = mapped_column(String(64))  # link id in the source model
    from_depth_m: Mapped[float | None] = mapped_column(Float)
    to_depth_m: Mapped[float | None] = mapped_column(Float)
    from_elevation_m: Mapped[float | None] = mapped_column(Float)  # at depth_ref
    to_elevation_m: Mapped[float | None] = mapped_column(Float)
    depth_ref: Mapped[str] = mapped_column(String(8), default="top")
    diameter_mm: Mapped[float | None] = mapped_column(Float)
    width_mm: Mapped[float | None] = mapped_column(Float)  # rectangular sections (断面 宽x高)
    height_mm: Mapped[float | None] = mapped_column(Float)
    material: Mapped[str | None] = mapped_column(String(8))  # CJJ 61 C.0.1 code
    burial: Mapped[str | None] = mapped_column(String(8))  # CJJ 61 C.0.2 code
    pressure_class: Mapped[str | None] = mapped_column(String(16))
    voltage_kv: Mapped[float | None] = mapped_column(Float)
    cable_count: Mapped[int | None] = mapped_column(Integer)
    holes_total: Mapped[int | None] = mapped_column(Integer)
    holes_used: Mapped[int | None] = mapped_column(Integer)
    # 1: flows from -> to; -1: to -> from; 0: not directed (pressure networks)
    flow_direction: Mapped[int] = mapped_column(SmallInteger, default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    build_year: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(4))  # CJJ 61 C.0.3 code
    road: Mapped[str | None] = mapped_column(String(64))
    length_m: Mapped[float] = mapped_column(Float)  # 3D length
    county_code: Mapped[str] = county_key()  # its from-node's
    geom: Mapped[object] = geom("LINESTRINGZ")  # centre line


class PipelineValve(Base):
    """An isolation valve on a pipe next to one of its ends (WNTR's valve layer: link, node).

    Survey networks carry valves as points (appurtenance 阀门) instead; the isolation analysis
    reads both: a valve point closes every pipe that meets it.
    """

    __tablename__ = "pipeline_valve"
    __table_args__ = (
        UniqueConstraint("dataset", "valve_no"),
        _in_batch(
            "network_batch_id", "segment_id", "pipeline_segment", "fk_pipeline_valve_segment"
        ),
        _in_batch("network_batch_id", "node_id", "pipeline_node", "fk_pipeline_valve_node"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    valve_no: Mapped[str] = mapped_column(String(32))
    # the import batch of the network the valve sits on (its segment's and node's partition);
    # a re-import of that network moves the valve onto the new batch's pipe
    network_batch_id: Mapped[int] = mapped_column(BigInteger, index=True)
    segment_id: Mapped[int] = mapped_column(BigInteger, index=True)
    node_id: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(8), default="open", server_default="open")
    county_code: Mapped[str] = county_key()  # its segment's
    geom: Mapped[object] = geom("POINTZ")
    batch_id: Mapped[int | None] = batch_fk()
