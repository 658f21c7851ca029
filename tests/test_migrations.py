"""The data model as PostGIS sees it: migrations both ways, indexes, CRS, dimensions, seeds."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text

from cimtwin import reference
from cimtwin.db import bootstrap, migrate
from cimtwin.db.engine import sqlalchemy_url
from cimtwin.spatial.model import SCHEMA, SRID, Base
from tests.pipeline_rows import network_batch

EXPECTED_TABLES = {
    "street",
    "community",
    "work_grid",
    "district",
    "parcel",
    "building",
    "building_representation",
    "bim_element",
    "bim_model",
    "bim_storey",
    "bim_space",
    "oblique_mesh_tile",
    "underground_structure",
    "pipeline_node",
    "pipeline_segment",
    "city_component",
    "incident",
    "import_batch",
    "twin_metadata",
    "pipeline_type",
    "code_dictionary",
    "component_class",
    "land_use_class",
    "api_key",
    "pipeline_valve",
    "terrain_dem",
    "terrain_dem_block",
}


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = :s AND tablename <> "
                "'alembic_version'"
            ),
            {"s": SCHEMA},
        )
        return {r[0] for r in rows}


@pytest.fixture()
def scratch_url(database_url: str):
    """A second, empty database for the down/up round trip (the session one stays intact)."""
    url = sqlalchemy_url(database_url).set(database=f"{sqlalchemy_url(database_url).database}_mig")
    url_s = bootstrap.recreate_database(url.render_as_string(hide_password=False), migrated=False)
    yield url_s
    bootstrap.drop_database(url_s)


def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    eng = create_engine(sqlalchemy_url(scratch_url))
    try:
        migrate.upgrade(scratch_url)
        assert _tables(eng) == EXPECTED_TABLES
        migrate.downgrade(scratch_url, "base")
        assert _tables(eng) == set()
        migrate.upgrade(scratch_url)
        assert _tables(eng) == EXPECTED_TABLES
        with eng.connect() as c:
            assert c.execute(text(f"SELECT count(*) FROM {SCHEMA}.pipeline_type")).scalar() == len(
                reference.pipeline_types()
            )
    finally:
        eng.dispose()


def test_0011_moves_the_end_node_keys_onto_each_pair_of_partitions(scratch_url: str) -> None:
    """A network imported before 0011 gets the keys on its pair of partitions, and loses those
    of the parents; a downgrade puts them back on the parents. A pipe whose end is not in its
    batch's nodes is refused either way."""
    import psycopg

    from cimtwin.db.engine import libpq_dsn

    keys = (
        "SELECT c.relname, k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "WHERE k.conname LIKE 'fk_pipeline_segment_%_node' AND k.conparentid = 0 ORDER BY 1, 2"
    )
    bad_pipe = (
        f"INSERT INTO {SCHEMA}.pipeline_segment (batch_id, dataset, network, from_node_id, "
        "to_node_id, depth_ref, flow_direction, length_m, county_code, geom) VALUES (%s, 'm', "
        f"'JS', -1, -2, 'top', 0, 1, '440309', ST_SetSRID('LINESTRING Z (0 0 0, 1 1 0)'::geometry, "
        f"{SRID}))"
    )
    migrate.upgrade(scratch_url, "0010")
    with psycopg.connect(libpq_dsn(scratch_url), autocommit=True) as conn:
        batch = conn.execute(
            f"INSERT INTO {SCHEMA}.import_batch (kind, dataset, source_files, sha256, format, "
            "source_crs, feature_count, error_count, warning_count, counts, options, status, "
            "imported_by) VALUES ('pipelines', 'm', '[]', '', 'test', 'EPSG:4547', 0, 0, 0, "
            "'{}', '{}', 'succeeded', 'tests') RETURNING id"
        ).fetchone()[0]
        for table in ("pipeline_node", "pipeline_segment"):
            conn.execute(
                f'CREATE TABLE "{SCHEMA}_part".{table}_b{batch} PARTITION OF '
                f"{SCHEMA}.{table} FOR VALUES IN ({batch})"
            )
        parents = [
            ("pipeline_segment", "fk_pipeline_segment_from_node"),
            ("pipeline_segment", "fk_pipeline_segment_to_node"),
        ]
        assert conn.execute(keys).fetchall() == parents
        migrate.upgrade(scratch_url)
        part = f"pipeline_segment_b{batch}"
        assert conn.execute(keys).fetchall() == [
            (part, "fk_pipeline_segment_from_node"),
            (part, "fk_pipeline_segment_to_node"),
        ]
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="from_node"):
            conn.execute(bad_pipe, (batch,))
        migrate.downgrade(scratch_url, "0010")
        assert conn.execute(keys).fetchall() == parents
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="from_node"):
            conn.execute(bad_pipe, (batch,))


def _not_a_partition_clone(obj, name, type_, reflected, compare_to) -> bool:
    """PostgreSQL gives a table that references a partitioned one a foreign key per partition
    (``..._fkey1`` to ``cim_part.pipeline_node_bN``): its own bookkeeping, not the model's."""
    return not (
        type_ == "foreign_key_constraint"
        and reflected
        and obj.referred_table.schema == f"{SCHEMA}_part"
    )


def test_models_match_migrations(engine: Engine, loaded_sample) -> None:
    """Alembic autogenerate finds nothing to do: the migration and the models agree (with
    imported data, so the partitioned tables have partitions)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from geoalchemy2 import alembic_helpers

    def include(*args) -> bool:
        return alembic_helpers.include_object(*args) and _not_a_partition_clone(*args)

    with engine.connect() as c:
        ctx = MigrationContext.configure(
            c,
            opts={
                "include_object": include,
                "include_schemas": True,
                "include_name": lambda name, kind, _: kind != "schema" or name == SCHEMA,
                "version_table_schema": SCHEMA,
            },
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_every_geometry_is_indexed_in_storage_crs(engine: Engine) -> None:
    with engine.connect() as c:
        cols = c.execute(
            text(
                "SELECT f_table_name, f_geometry_column, srid, coord_dimension, type "
                "FROM geometry_columns WHERE f_table_schema = :s"
            ),
            {"s": SCHEMA},
        ).all()
        gist = {
            (r[0], r[1])
            for r in c.execute(
                text(
                    "SELECT t.relname, a.attname FROM pg_index x "
                    "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                    "JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = "
                    "t.relnamespace "
                    "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey) "
                    "WHERE n.nspname = :s AND am.amname = 'gist'"
                ),
                {"s": SCHEMA},
            )
        }
    assert len(cols) >= 12
    dims = {(t, g): (srid, dim, typ) for t, g, srid, dim, typ in cols}
    for (table, column), (srid, _, _) in dims.items():
        assert srid == SRID, f"{table}.{column} is in SRID {srid}"
        assert (table, column) in gist, f"{table}.{column} has no GiST index"
    # heights are kept where the object is 3D
    assert dims[("pipeline_node", "geom")][1] == 3
    assert dims[("pipeline_segment", "geom")][1:] == (3, "LINESTRING")
    assert dims[("bim_element", "geom")][1] == 3


def test_every_table_has_a_primary_key(engine: Engine) -> None:
    with engine.connect() as c:
        no_pk = (
            c.execute(
                text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace "
                    "WHERE n.nspname = :s AND c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM "
                    "pg_constraint "
                    "k WHERE k.conrelid = c.oid AND k.contype = 'p')"
                ),
                {"s": SCHEMA},
            )
            .scalars()
            .all()
        )
    assert no_pk == []


def test_metadata_and_dictionaries_seeded(engine: Engine) -> None:
    with engine.connect() as c:
        meta = dict(c.execute(text(f"SELECT key, value FROM {SCHEMA}.twin_metadata")).all())
        classes = c.execute(text(f"SELECT count(*) FROM {SCHEMA}.component_class")).scalar()
        water = c.execute(
            text(f"SELECT color_hex FROM {SCHEMA}.pipeline_type WHERE code = 'JP'")
        ).scalar()
        materials = c.execute(
            text(f"SELECT count(*) FROM {SCHEMA}.code_dictionary WHERE dict = 'material'")
        ).scalar()
    assert meta["storage_srid"] == str(SRID)
    assert meta["vertical_datum"] == "EPSG:5737"
    assert classes == len(reference.component_classes()) > 100
    assert water == "#00ffff"  # CJJ 61: water supply is sky blue
    assert materials == len(reference.attribute_codes("material"))


def test_3d_pipe_round_trip_and_topology_constraints(engine: Engine) -> None:
    """A PointZ/LineStringZ pipe keeps its heights; a segment cannot start and end at one node."""
    with engine.begin() as c:
        raw = c.connection.driver_connection
        batch = network_batch(raw.execute, "t")
        ids = (
            c.execute(
                text(
                    f"INSERT INTO {SCHEMA}.pipeline_node (batch_id, dataset, point_no, network, "
                    "subtype, county_code, geom) "
                    "VALUES "
                    "(:batch, 't', 'JS1', 'JS', 'JP', '440309', ST_SetSRID(ST_MakePoint(502456, "
                    f"2501564, 80.5), {SRID})),"
                    "(:batch, 't', 'JS2', 'JS', 'JP', '440309', ST_SetSRID(ST_MakePoint(502500, "
                    f"2501564, 80.1), {SRID})) "
                    "RETURNING id"
                ),
                {"batch": batch},
            )
            .scalars()
            .all()
        )
        seg = c.execute(
            text(
                f"INSERT INTO {SCHEMA}.pipeline_segment (batch_id, dataset, network, subtype, "
                "from_node_id, to_node_id, depth_ref, flow_direction, length_m, county_code, geom) "
                "VALUES (:batch, 't', 'JS', 'JP', "
                ":a, :b, 'top', 0, 44, '440309', "
                "ST_SetSRID(ST_MakeLine(ST_MakePoint(502456, 2501564, 79.3),"
                f" ST_MakePoint(502500, 2501564, 78.9)), {SRID})) RETURNING ST_3DLength(geom), "
                "ST_ZMin(geom)"
            ),
            {"a": ids[0], "b": ids[1], "batch": batch},
        ).one()
        assert seg[0] == pytest.approx((44**2 + 0.4**2) ** 0.5)
        assert seg[1] == pytest.approx(78.9)
        c.rollback()
    with pytest.raises(Exception, match="not_a_loop"), engine.begin() as c:
        batch = network_batch(c.connection.driver_connection.execute, "t")
        nid = c.execute(
            text(
                f"INSERT INTO {SCHEMA}.pipeline_node (batch_id, dataset, point_no, network, "
                "county_code, geom)"
                " VALUES (:batch, 't', 'X1', 'JS', '440309', "
                f"ST_SetSRID(ST_MakePoint(0, 0, 0), {SRID}))"
                " RETURNING id"
            ),
            {"batch": batch},
        ).scalar()
        c.execute(
            text(
                f"INSERT INTO {SCHEMA}.pipeline_segment (batch_id, dataset, network, "
                "from_node_id, to_node_id, "
                "depth_ref, flow_direction, length_m, county_code, geom) "
                "VALUES (:batch, 't', 'JS', "
                ":n, :n, 'top', 0, 0, '440309', "
                f"ST_SetSRID('LINESTRING Z (0 0 0, 1 1 0)'::geometry, {SRID}))"
            ),
            {"n": nid, "batch": batch},
        )
    with pytest.raises(Exception, match="fk_pipeline_segment_from_node"), engine.begin() as c:
        # a segment's end nodes are in its own batch (composite key): another batch's node
        # with the same id does not do
        first = network_batch(c.connection.driver_connection.execute, "t1")
        other = network_batch(c.connection.driver_connection.execute, "t2")
        nid = c.execute(
            text(
                f"INSERT INTO {SCHEMA}.pipeline_node (batch_id, dataset, point_no, network, "
                "county_code, geom)"
                " VALUES (:batch, 't1', 'X1', 'JS', '440309', "
                f"ST_SetSRID(ST_MakePoint(0, 0, 0), {SRID}))"
                " RETURNING id"
            ),
            {"batch": first},
        ).scalar()
        c.execute(
            text(
                f"INSERT INTO {SCHEMA}.pipeline_segment (batch_id, dataset, network, "
                "from_node_id, to_node_id, depth_ref, flow_direction, length_m, county_code, geom) "
                "VALUES (:batch, 't2', 'JS', :n, :n + 1, 'top', 0, 1, '440309', "
                f"ST_SetSRID('LINESTRING Z (0 0 0, 1 1 0)'::geometry, {SRID}))"
            ),
            {"n": nid, "batch": other},
        )


def test_db_setup_is_idempotent(database_url: str, engine: Engine) -> None:
    """Running the set-up steps again changes nothing (no duplicate seeds, same revision)."""

    def snapshot() -> tuple:
        with engine.connect() as c:
            rev = c.execute(text(f"SELECT version_num FROM {SCHEMA}.alembic_version")).scalar()
            counts = tuple(
                c.execute(text(f"SELECT count(*) FROM {SCHEMA}.{t}")).scalar()
                for t in (
                    "pipeline_type",
                    "code_dictionary",
                    "component_class",
                    "land_use_class",
                    "twin_metadata",
                )
            )
        return rev, counts

    before = snapshot()
    assert bootstrap.create_database(database_url) is False
    bootstrap.create_extensions(database_url)
    migrate.upgrade(database_url)
    assert snapshot() == before
