"""The analyses' answers as pydantic models, for the OpenAPI document only.

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


def answer(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose 200 is ``model``'s JSON."""
    return {200: {"model": model, "description": description}}
