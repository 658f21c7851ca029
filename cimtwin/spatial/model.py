"""Every table of the twin, importable from one place (Alembic autogenerate reads this)."""

from cimtwin.spatial.access import ApiKey
from cimtwin.spatial.admin_grid import Community, District, Street, WorkGrid
from cimtwin.spatial.base import SCHEMA, SRID, Base
from cimtwin.spatial.bim import BimElement, BimModel, BimSpace, BimStorey
from cimtwin.spatial.building import (
    Building,
    BuildingRepresentation,
    ObliqueMeshTile,
    UndergroundStructure,
)
from cimtwin.spatial.city_component import CityComponent
from cimtwin.spatial.dictionaries import CodeDictionary, ComponentClass, LandUseClass, PipelineType
from cimtwin.spatial.incident import Incident
from cimtwin.spatial.parcel import Parcel
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment, PipelineValve
from cimtwin.spatial.provenance import ImportBatch, TwinMetadata
from cimtwin.spatial.terrain import TerrainDem, TerrainDemBlock

__all__ = [
    "SCHEMA",
    "SRID",
    "ApiKey",
    "Base",
    "BimElement",
    "BimModel",
    "BimSpace",
    "BimStorey",
    "Building",
    "BuildingRepresentation",
    "CityComponent",
    "CodeDictionary",
    "Community",
    "ComponentClass",
    "District",
    "ImportBatch",
    "Incident",
    "LandUseClass",
    "ObliqueMeshTile",
    "Parcel",
    "PipelineNode",
    "PipelineSegment",
    "PipelineType",
    "PipelineValve",
    "Street",
    "TerrainDem",
    "TerrainDemBlock",
    "TwinMetadata",
    "UndergroundStructure",
    "WorkGrid",
]
