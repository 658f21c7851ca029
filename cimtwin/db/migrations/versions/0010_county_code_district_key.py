"""citus layout: county_code, the district key, on every big table

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Every table ``cimtwin.db.layout`` distributes gains ``county_code`` (GB/T 2260, 6 digits,
NOT NULL), the column a Citus cluster would distribute by. The importers fill it; this
migration fills the rows already there: a row with a grid code takes its first six digits, a
row with a position takes the county of the work grid holding it, a pipe its from-node's, a
valve its pipe's, a representation its building's, a BIM model its building's (else its
footprint's grid's), BIM storeys, spaces and elements their model's, an oblique pyramid the county most of its tiles lie in. What is still unplaced (a
row outside every grid) takes the twin's county: the grids' one county, else the configured
``CIMTWIN_COUNTY_CODE``. Keys are unchanged (see ``KEY_VIOLATIONS`` in the layout).
"""

from collections.abc import Sequence

from alembic import op

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
COUNTY = get_settings().county_code

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = f'"{SCHEMA}"'

#: the big tables, parents before the tables that take their county from them
TABLES = (
    "building",
    "parcel",
    "incident",
    "city_component",
    "pipeline_node",
    "pipeline_segment",
    "pipeline_valve",
    "building_representation",
    "bim_model",
    "bim_storey",
    "bim_space",
    "bim_element",
    "oblique_mesh_tile",
)
#: tables with a grid code and the geometry their grid is found by
GRIDDED = {
    "building": "footprint",
    "parcel": "geom",
    "incident": "geom",
    "city_component": "geom",
    "pipeline_node": "geom",
}


def _grid_county(geom: str) -> str:
    """SQL: the county of the lowest-coded work grid holding a point on ``geom``."""
    return (
        f"(SELECT left(g.code, 6) FROM {S}.work_grid g "
        f"WHERE ST_Intersects(g.geom, ST_PointOnSurface({geom})) ORDER BY g.code LIMIT 1)"
    )


def _fill(table: str, value: str, where: str = "") -> None:
    cond = f" AND ({where})" if where else ""
    op.execute(f"UPDATE {S}.{table} t SET county_code = {value} WHERE county_code IS NULL{cond}")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {S}.{table} ADD COLUMN county_code varchar(6)")
    for table, geom in GRIDDED.items():
        _fill(table, "left(grid_code, 6)", "grid_code IS NOT NULL")
        _fill(table, _grid_county(f"t.{geom}"))
    _fill(
        "pipeline_segment",
        f"(SELECT n.county_code FROM {S}.pipeline_node n "
        "WHERE (n.batch_id, n.id) = (t.batch_id, t.from_node_id))",
    )
    _fill(
        "pipeline_valve",
        f"(SELECT s.county_code FROM {S}.pipeline_segment s "
        "WHERE (s.batch_id, s.id) = (t.network_batch_id, t.segment_id))",
    )
    building = f"(SELECT b.county_code FROM {S}.building b WHERE b.id = t.building_id)"
    model = f"(SELECT m.county_code FROM {S}.bim_model m WHERE m.id = t.model_id)"
    _fill("building_representation", building)
    _fill("bim_model", building)
    _fill("bim_model", _grid_county("t.footprint"), "t.footprint IS NOT NULL")
    for table in ("bim_storey", "bim_space", "bim_element"):
        _fill(table, model)
    _fill("bim_element", building)
    # a pyramid (one dataset) stays together: the county most of its tiles lie in
    op.execute(
        f"""UPDATE {S}.oblique_mesh_tile t SET county_code = d.county
            FROM (SELECT DISTINCT ON (dataset) dataset, county FROM (
                    SELECT o.dataset, {_grid_county("o.footprint")} AS county
                    FROM {S}.oblique_mesh_tile o) c
                  WHERE county IS NOT NULL
                  GROUP BY dataset, county ORDER BY dataset, count(*) DESC, county) d
            WHERE t.dataset = d.dataset"""
    )
    twin = (
        f"coalesce((SELECT min(left(code, 6)) FROM {S}.work_grid "
        f"HAVING count(DISTINCT left(code, 6)) = 1), '{COUNTY}')"
    )
    for table in TABLES:
        _fill(table, twin)
        op.execute(
            f"""ALTER TABLE {S}.{table} ALTER COLUMN county_code SET NOT NULL,
                  ADD CONSTRAINT ck_{table}_county_code CHECK (county_code ~ '^[0-9]{{6}}$')"""
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"ALTER TABLE {S}.{table} DROP COLUMN county_code")
