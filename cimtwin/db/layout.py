"""The twin's tables as a Citus cluster would hold them: one place that says which tables are
distributed by county (district) code and which are reference tables copied to every node.

Nothing here talks to Citus (these machines have no Citus package); ``docs/scaling.md``
explains the layout and ``tests/test_citus_layout.py`` checks the schema against it, so a new
table has to be classified here and a big table cannot lose its district key.
"""

from __future__ import annotations

#: the distribution column: the 6-digit GB/T 2260 county code (a grid code's first 6 digits)
DISTRIBUTION_COLUMN = "county_code"
COUNTY_DIGITS = 6

#: tables distributed by ``county_code``: a district's rows and every spatial join between
#: them stay on one node
DISTRIBUTED = frozenset(
    {
        "building",
        "building_representation",
        "parcel",
        "incident",
        "city_component",
        "pipeline_node",
        "pipeline_segment",
        "pipeline_valve",
        "bim_model",
        "bim_storey",
        "bim_space",
        "bim_element",
        "oblique_mesh_tile",
    }
)

#: tables copied to every node: dictionaries, the admin layers every import places rows
#: with, provenance and keys, and the layers that span districts (a metro line, a DEM)
REFERENCE = frozenset(
    {
        "code_dictionary",
        "component_class",
        "land_use_class",
        "pipeline_type",
        "street",
        "community",
        "work_grid",
        "district",
        "import_batch",
        "twin_metadata",
        "api_key",
        "underground_structure",
        "terrain_dem",
        "terrain_dem_block",
    }
)

#: primary keys, unique constraints and foreign keys of distributed tables that do not yet
#: include ``county_code`` (Citus refuses them). Keys were left as they are (migration 0010
#: adds and fills the column only); each entry is (table, constraint name). The layout test
#: fails when a constraint breaks the rule and is not listed here, and when a listed one no
#: longer breaks it (fixed or gone), so this list is always the exact work left.
KEY_VIOLATIONS = frozenset(
    {
        ("building", "pk_building"),
        ("building", "uq_building_building_code"),
        ("building_representation", "pk_building_representation"),
        ("building_representation", "fk_building_representation_building_id_building"),
        ("parcel", "pk_parcel"),
        ("parcel", "uq_parcel_parcel_code"),
        ("incident", "pk_incident"),
        ("incident", "uq_incident_external_id"),
        ("city_component", "pk_city_component"),
        ("pipeline_node", "pk_pipeline_node"),
        ("pipeline_node", "uq_pipeline_node_batch_id_point_no"),
        ("pipeline_segment", "pk_pipeline_segment"),
        # keys of each pair of partitions (pipeline_network.SEGMENT_END_KEYS), counted as
        # the parent's
        ("pipeline_segment", "fk_pipeline_segment_from_node"),
        ("pipeline_segment", "fk_pipeline_segment_to_node"),
        ("pipeline_valve", "pk_pipeline_valve"),
        ("pipeline_valve", "uq_pipeline_valve_dataset_valve_no"),
        ("pipeline_valve", "fk_pipeline_valve_segment"),
        ("pipeline_valve", "fk_pipeline_valve_node"),
        ("bim_model", "pk_bim_model"),
        ("bim_model", "uq_bim_model_dataset"),
        ("bim_model", "fk_bim_model_building_id_building"),
        ("bim_storey", "pk_bim_storey"),
        ("bim_storey", "fk_bim_storey_model_id_bim_model"),
        ("bim_space", "pk_bim_space"),
        ("bim_space", "fk_bim_space_model_id_bim_model"),
        ("bim_space", "fk_bim_space_storey_id_bim_storey"),
        ("bim_element", "pk_bim_element"),
        ("bim_element", "fk_bim_element_building_id_building"),
        ("bim_element", "fk_bim_element_model_id_bim_model"),
        ("oblique_mesh_tile", "pk_oblique_mesh_tile"),
        ("oblique_mesh_tile", "fk_oblique_mesh_tile_parent_id_oblique_mesh_tile"),
        ("oblique_mesh_tile", "fk_oblique_mesh_tile_building_id_building"),
    }
)


def county_of(grid_code: str | None) -> str | None:
    """The county a grid code lies in (its first six digits); None without a grid code."""
    return grid_code[:COUNTY_DIGITS] if grid_code else None


#: statements of the service that combine rows of big tables (joins, subqueries, unions of
#: extents) without ``county_code``, found in the source by ``tests/test_citus_layout.py``:
#: "module:function" (or ":<module>" for module constants) with the tables. Joins by id
#: carry the key already; these are spatial joins, the pipeline analyses' graph statements
#: and extents, which docs/scaling.md says how Citus would run.
JOINS_WITHOUT_COUNTY: dict[str, frozenset[str]] = {
    "cimtwin/spatial/admin_queries.py:_grid_static": frozenset(["building", "oblique_mesh_tile"]),
    "cimtwin/spatial/district_queries.py:ground_sql": frozenset(["building", "pipeline_node"]),
    "cimtwin/spatial/parcel_queries.py:parcel_report": frozenset(
        ["building", "city_component", "parcel", "pipeline_segment"]
    ),
    "cimtwin/spatial/pipelines/clearance.py:clearance_buildings_sql": frozenset(
        ["building", "pipeline_segment"]
    ),
    "cimtwin/spatial/pipelines/clearance.py:clearance_pairs_sql": frozenset(["pipeline_segment"]),
    "cimtwin/spatial/pipelines/graph.py:<module>": frozenset(
        ["pipeline_node", "pipeline_segment", "pipeline_valve"]
    ),
    "cimtwin/spatial/pipelines/isolation.py:<module>": frozenset(["building", "pipeline_segment"]),
    "cimtwin/spatial/pipelines/profile.py:<module>": frozenset(
        ["pipeline_node", "pipeline_segment"]
    ),
    "cimtwin/spatial/pipelines/sections.py:<module>": frozenset(
        ["pipeline_node", "pipeline_segment"]
    ),
    "cimtwin/tiles/threed/sources/buildings.py:<module>": frozenset(["bim_model", "building"]),
    "cimtwin/tiles/threed/sources/buildings.py:bounds": frozenset(["bim_model", "building"]),
    "cimtwin/tiles/threed/sources/components.py:bounds": frozenset(
        ["city_component", "pipeline_node"]
    ),
    "cimtwin/tiles/threed/sources/pipeline_points.py:<module>": frozenset(["pipeline_segment"]),
    "cimtwin/tiles/threed/sources/pipeline_points.py:bounds": frozenset(
        ["pipeline_node", "pipeline_segment"]
    ),
    "cimtwin/tiles/threed/sources/pipeline_points.py:rows": frozenset(
        ["pipeline_node", "pipeline_segment"]
    ),
}
