"""The layers the twin publishes (vector tiles, OGC API Features): one entry per layer, naming
its table, id, geometry and the properties exposed. It is the allow-list: no identifier reaches
SQL unless it is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cimtwin.spatial.admin_grid import Community, District, Street, WorkGrid
from cimtwin.spatial.base import Base, schema_of, table_of
from cimtwin.spatial.bim import BimElement, BimSpace
from cimtwin.spatial.building import Building, UndergroundStructure
from cimtwin.spatial.city_component import CityComponent
from cimtwin.spatial.incident import Incident
from cimtwin.spatial.parcel import Parcel
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment


@dataclass(frozen=True)
class Layer:
    id: str
    title: str
    description: str
    model: type[Base]
    id_column: str
    geometry_column: str
    geometry_type: str  # point, line, polygon (for styles and TileJSON)
    properties: tuple[str, ...]
    minzoom: int = 10
    maxzoom: int = 22
    #: tolerance in pixels for per-zoom simplification (0: never simplify, e.g. points)
    simplify_px: float = 0.5
    temporal: str | None = None
    keywords: tuple[str, ...] = field(default_factory=tuple)
    #: integer feature id for vector tiles when ``id_column`` is not an integer
    tile_id: str | None = None
    #: (below zoom, SQL condition) generalisation: fixed SQL from this file, never user text
    lowzoom_filters: tuple[tuple[int, str], ...] = ()
    #: tiles carry one point on each feature's surface (label anchors), not the shape
    point_on_surface: bool = False
    #: below this zoom, features are merged per ``aggregate_by`` group into simplified lines
    #: (a network overview without per-feature ids, as small tiles need)
    aggregate_below: int | None = None
    aggregate_by: tuple[str, ...] = ()
    #: properties carried in vector tiles: what maps style, filter and label by (None: all);
    #: the rest is one OGC API Features request away, by the feature id
    tile_properties: tuple[str, ...] | None = None

    @property
    def tile_fields(self) -> tuple[str, ...]:
        return self.properties if self.tile_properties is None else self.tile_properties

    #: published as an OGC API Features collection (label layers are tiles only)
    features: bool = True
    #: features collections only: a fixed SQL condition from this file selecting the layer's
    #: rows (never user text), and the geometry type they are given (MULTI*: ST_Multi)
    features_where: str | None = None
    features_geometry: str | None = None

    @property
    def table(self) -> str:
        return self.model.__tablename__

    @property
    def schema(self) -> str:
        return schema_of(self.model)

    def column_type(self, name: str) -> str:
        """'number', 'integer', 'string', 'datetime' or 'object' for TileJSON and JSON Schema."""
        col = table_of(self.model).columns[name]
        try:
            py = col.type.python_type
        except NotImplementedError:
            return "object"
        if py is int:
            return "integer"
        if py is float:
            return "number"
        if py.__name__ == "datetime":
            return "datetime"
        if py is dict:
            return "object"
        return "string"


LAYERS: tuple[Layer, ...] = (
    Layer(
        "streets",
        "Streets (街道)",
        "Sub-district administrative areas",
        Street,
        "code",
        "geom",
        "polygon",
        ("code", "name"),
        minzoom=8,
        tile_id="code::bigint",
    ),
    Layer(
        "communities",
        "Communities (社区)",
        "Communities within streets",
        Community,
        "code",
        "geom",
        "polygon",
        ("code", "name", "street_code"),
        minzoom=9,
        tile_id="code::bigint",
    ),
    Layer(
        "grids",
        "Work grids (单元网格)",
        "Work grids: the unit of city management",
        WorkGrid,
        "code",
        "geom",
        "polygon",
        ("code", "name", "community_code", "area_m2", "officer"),
        minzoom=10,
        tile_id="code::bigint",
    ),
    Layer(
        "grid_labels",
        "Work grid labels",
        "One label point per work grid",
        WorkGrid,
        "code",
        "geom",
        "point",
        ("code", "name"),
        minzoom=13,
        simplify_px=0,
        tile_id="code::bigint",
        point_on_surface=True,
        features=False,
    ),
    Layer(
        "districts",
        "Districts",
        "Named areas such as the North Station business district",
        District,
        "slug",
        "geom",
        "polygon",
        ("slug", "name", "kind"),
        minzoom=8,
        tile_id="id",
    ),
    Layer(
        "parcels",
        "Land parcels (地块)",
        "Parcels with GB 50137 land use and planning controls",
        Parcel,
        "id",
        "geom",
        "polygon",
        ("parcel_code", "land_use", "area_m2", "planned_plot_ratio", "height_limit_m", "grid_code"),
        minzoom=12,
        tile_properties=("parcel_code", "land_use", "planned_plot_ratio", "height_limit_m"),
    ),
    Layer(
        "parcel_labels",
        "Land parcel labels",
        "One label point per parcel (its land use), so a parcel cut by tile edges is named once",
        Parcel,
        "id",
        "geom",
        "point",
        ("parcel_code", "land_use"),
        minzoom=14,
        simplify_px=0,
        point_on_surface=True,
        features=False,
    ),
    Layer(
        "buildings",
        "Buildings",
        "Building footprints with heights (LOD1)",
        Building,
        "id",
        "footprint",
        "polygon",
        (
            "building_code",
            "name",
            "address",
            "use",
            "height_m",
            "floors",
            "underground_floors",
            "base_elevation_m",
            "floor_area_m2",
            "residents",
            "grid_code",
        ),
        minzoom=13,
    ),
    Layer(
        "rooms",
        "Rooms (BIM)",
        "Rooms (IfcSpace) of imported BIM models: floor plan, storey, floor and ceiling heights",
        BimSpace,
        "id",
        "footprint",
        "polygon",
        (
            "ifc_guid",
            "name",
            "long_name",
            "usage",
            "storey",
            "area_m2",
            "volume_m3",
            "floor_elevation_m",
            "ceiling_elevation_m",
        ),
        minzoom=16,
        keywords=("indoor", "BIM", "IfcSpace"),
    ),
    Layer(
        "underground",
        "Underground structures",
        "Metro tunnels and stations, passages",
        UndergroundStructure,
        "id",
        "footprint",
        "polygon",
        ("code", "kind", "name", "top_elevation_m", "bottom_elevation_m"),
        minzoom=12,
    ),
    Layer(
        "pipelines",
        "Pipelines (管线)",
        "Underground pipes by CJJ 61 network",
        PipelineSegment,
        "id",
        "geom",
        "line",
        (
            "network",
            "subtype",
            "link_type",
            "diameter_mm",
            "width_mm",
            "height_mm",
            "material",
            "burial",
            "from_depth_m",
            "to_depth_m",
            "from_elevation_m",
            "to_elevation_m",
            "depth_ref",
            "flow_direction",
            "pressure_class",
            "owner",
            "build_year",
            "status",
            "road",
            "length_m",
        ),
        minzoom=12,
        lowzoom_filters=((14, "(diameter_mm >= 400 OR height_mm >= 1000 OR subtype = 'SS')"),),
        aggregate_below=15,
        aggregate_by=("network", "subtype"),
        tile_properties=(
            "network",
            "subtype",
            "link_type",
            "diameter_mm",
            "width_mm",
            "height_mm",
            "material",
            "from_depth_m",
            "to_depth_m",
            "flow_direction",
        ),
    ),
    Layer(
        "pipeline_points",
        "Pipeline points (管线点)",
        "Survey points: valves, hydrants, manholes and fittings",
        PipelineNode,
        "id",
        "geom",
        "point",
        (
            "point_no",
            "network",
            "subtype",
            "feature",
            "appurtenance",
            "ground_elevation_m",
            "well_depth_m",
            "valve_state",
            "grid_code",
        ),
        minzoom=15,
        simplify_px=0,
    ),
    Layer(
        "components",
        "City components (城市部件)",
        "Managed street objects with 16-digit ids",
        CityComponent,
        "id",
        "geom",
        "point",
        (
            "component_id",
            "class_code",
            "name",
            "status",
            "dept_authority",
            "dept_owner",
            "dept_maintainer",
            "grid_code",
        ),
        minzoom=15,
        simplify_px=0,
        tile_properties=("component_id", "class_code", "status"),
    ),
    Layer(
        "incidents",
        "Incidents",
        "Reported incidents",
        Incident,
        "id",
        "geom",
        "point",
        ("incident_type", "severity", "status", "title", "reported_at", "updated_at", "grid_code"),
        minzoom=8,
        simplify_px=0,
        temporal="reported_at",
    ),
    Layer(
        "bim_elements",
        "BIM elements",
        "Elements of imported IFC models (walls, slabs, doors, windows, ...): footprints, with "
        "the 3D geometry in the model's 3D Tiles",
        BimElement,
        "id",
        "footprint",
        "polygon",
        (
            "model",
            "ifc_guid",
            "ifc_class",
            "name",
            "ifc_type",
            "storey",
            "storey_elevation_m",
            "material_color",
            "building_id",
        ),
        minzoom=16,
        tile_properties=("model", "ifc_guid", "ifc_class", "name", "storey"),
    ),
)

BY_ID: dict[str, Layer] = {layer.id: layer for layer in LAYERS}

#: (suffix, ST_Dimension, geometry type given, geometry_type) of the one-type collections
_DIMENSIONS = (
    ("points", 0, None, "point"),
    ("lines", 1, "MULTILINESTRING", "line"),
    ("polygons", 2, "MULTIPOLYGON", "polygon"),
)


def _by_geometry_type(layer: Layer) -> tuple[Layer, ...]:
    """One collection per geometry family of a layer that mixes them (``components``: points,
    lines and polygons), so that a client keeping one geometry type per layer (GDAL, for a
    GeoPackage) copies it as it is; lines and polygons are given as multi-geometries, so each
    collection has one type."""
    return tuple(
        replace(
            layer,
            id=f"{layer.id}_{suffix}",
            title=f"{layer.title}: {suffix}",
            description=f"{layer.description}: the {suffix} only",
            geometry_type=family,
            features_where=f"ST_Dimension({layer.geometry_column}) = {dimension}",
            features_geometry=geometry or "POINT",
        )
        for suffix, dimension, geometry, family in _DIMENSIONS
    )


#: the OGC API Features collections
COLLECTIONS: tuple[Layer, ...] = tuple(layer for layer in LAYERS if layer.features) + (
    _by_geometry_type(BY_ID["components"])
)
_COLLECTION_BY_ID: dict[str, Layer] = {layer.id: layer for layer in COLLECTIONS}


def get_layer(layer_id: str) -> Layer | None:
    return BY_ID.get(layer_id)


def get_collection(layer_id: str) -> Layer | None:
    return _COLLECTION_BY_ID.get(layer_id)
