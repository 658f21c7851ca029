"""The JSON answers (analyses, summaries, lookups) as pydantic models, for the OpenAPI
document only.

The routes build their JSON themselves (numpy figures, pre-serialised GeoJSON) and return
it as it is; these models describe that JSON (``responses={200: {"model": ...}}``) so that a
client generator or a schema-checking fuzzer knows each answer's fields. They list the
fields every answer has; nested items stay open objects (their fields vary by network and
layer), and extra fields are allowed, as the answers may grow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Obj = dict[str, Any]


class FeatureCollectionJSON(BaseModel):
    """A GeoJSON FeatureCollection inside an answer."""

    type: str = Field(json_schema_extra={"enum": ["FeatureCollection"]})
    features: list[Obj]


class Isolation(BaseModel):
    """Which valves to close for a burst, what is cut off and who is affected."""

    network: str
    burst: Obj
    valves: list[Obj]
    failed_valves: Obj
    rings: int | list[Any]
    isolated_segments: Obj
    affected_nodes: Obj
    customers: Obj
    features: FeatureCollectionJSON
    truncated: bool


class ClearanceCheck(BaseModel):
    """GB 50289-2016 clearance violations in an area or along a pipe."""

    standard: str
    method: str
    violations: list[Obj]
    counts: Obj


class ExcavationCheck(BaseModel):
    """Pipes and nodes an excavation of a depth would hit."""

    depth_m: float
    rule: str
    summary: Obj | list[Any]
    pipes: list[Obj]
    nodes: list[Obj]
    truncated: bool


class CrossSection(BaseModel):
    """Pipes crossing a section line, with the ground along it."""

    length_m: float
    pipes: list[Obj]
    truncated: bool
    ground: Obj
    notes: list[str]


class NetworkQA(BaseModel):
    """Topology QA per network: components, dangling ends, loops, reversed slopes."""

    networks: list[Obj]


class Profile(BaseModel):
    """The longitudinal profile of a chain of pipes from a segment."""

    network: str
    start_segment_id: int
    mode: str
    stopped: str | None
    length_m: float
    segments: list[Obj]
    ground_line: Obj
    features: FeatureCollectionJSON


class IncidentSummary(BaseModel):
    id: int
    type: str
    status: str
    severity: str | int | None
    title: str | None
    geometry: Obj | None


class IncidentContext(BaseModel):
    """What is around an incident: responsible grid, hydrants, pipes, buildings (and the
    valves to close for a pipe burst)."""

    incident: IncidentSummary
    radius_m: float
    grid: Obj | None
    hydrants: Obj | list[Any]
    isolation: Obj | None = None
    gas_pipes: Obj | list[Any]
    power_cables: Obj | list[Any]
    buildings: Obj | list[Any]


class VolumeAnswer(BaseModel):
    """Objects of a district within an area and an elevation range, by layer (each a
    GeoJSON FeatureCollection)."""

    district: str
    area_m2: float
    elevation: Obj
    note: str | None = None
    layers: dict[str, FeatureCollectionJSON]


# --- lookups and summaries ------------------------------------------------------------------


class Coded(BaseModel):
    code: str
    name: str | None


class Grid(BaseModel):
    code: str
    name: str | None
    officer: str | None
    area_m2: float | None


class Position(BaseModel):
    lon: float
    lat: float
    x: float | None
    y: float | None


class GridPosition(Position):
    storage_crs: str


class GridLocation(BaseModel):
    """The street, community and work grid at a position."""

    position: GridPosition
    street: Coded | None
    community: Coded | None
    grid: Grid


class GridSummary(BaseModel):
    """What a work grid holds (all but the open incidents cached until the next import)."""

    street: Coded | None
    community: Coded | None
    grid: Grid
    buildings: Obj
    residents: int | float
    components: Obj
    pipelines: Obj
    parcels: Obj
    open_incidents: Obj


class DistrictItem(BaseModel):
    slug: str
    name: str
    kind: str | None
    description: str | None
    area_m2: float | None
    bbox: list[float] | None
    href: str
    above_ground: Obj | None = None
    below_ground: Obj | None = None


class DistrictList(BaseModel):
    """The named districts (with ``summary=true`` each one's summary too)."""

    districts: list[DistrictItem]
    count: int


class DistrictSummary(BaseModel):
    """A district above and below ground."""

    slug: str
    name: str
    kind: str | None
    description: str | None
    area_m2: float | None
    above_ground: Obj
    below_ground: Obj


class ParcelReport(BaseModel):
    """A parcel's planning report: buildings, plot ratio and height against the plan,
    pipes and components."""

    parcel: Obj
    geometry: Obj | None
    buildings: Obj
    plot_ratio: Obj
    height: Obj
    pipelines: Obj
    components: Obj


class IndoorPosition(Position):
    h: float


class IndoorLocation(BaseModel):
    """The room, else the BIM building and storey, at a 3D point; else outside."""

    position: IndoorPosition
    inside: bool
    answer: str = Field(json_schema_extra={"enum": ["room", "building", "outside"]})
    building: str | None = None
    model: str | int | None = None
    storey: str | None = None
    room: Obj | None = None


class Storeys(BaseModel):
    """The storeys of a building's BIM model, bottom up."""

    building: str
    storeys: list[Obj]


class SearchHit(BaseModel):
    kind: str
    collection: str
    id: int | str
    label: str | None
    position: list[float] | None
    bbox: list[float] | None = None


class SearchAnswer(BaseModel):
    """Buildings, grids, parcels and pipe points matching a text, best first."""

    q: str
    numberReturned: int  # noqa: N815 (the OGC name)
    results: list[SearchHit]


class BimElement(BaseModel):
    """One BIM element by its IFC GlobalId, with its property sets and quantities."""

    ifc_guid: str
    ifc_class: str
    name: str | None
    storey: str | None
    property_sets: Obj | list[Any] | None
    quantities: Obj | list[Any] | None
    model: str | None
    building: str | None
    other_models: list[Any]


def answer(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose 200 is ``model``'s JSON."""
    return {200: {"model": model, "description": description}}
