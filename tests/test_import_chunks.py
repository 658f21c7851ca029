"""Imports send their rows in COPY chunks (CIMTWIN_IMPORT_CHUNK_ROWS), computing work-grid codes
and EWKB per chunk: tiny chunks must store exactly what one chunk stores, and a failure in a
later chunk must leave nothing written."""

from __future__ import annotations

import psycopg
import pytest

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import
from cimtwin.spatial import bulk
from tests.conftest import SAMPLE, table_fingerprint

COMPONENTS = [SAMPLE / "gpkg/components.gpkg"]
PIPELINES = [SAMPLE / "pipelines/points.csv", SAMPLE / "pipelines/lines.csv"]


@pytest.fixture(scope="module")
def with_grids(scratch_database: str) -> str:
    run_import(
        importer_for("grids"),
        [SAMPLE / "gpkg/admin.gpkg"],
        ImportOptions(dataset="chunks-grids"),
        scratch_database,
    )
    return scratch_database


def _rows(url: str, sql: str, batch_id: int) -> list[tuple]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(sql, (batch_id,)).fetchall()


COMPONENT_ROWS = (
    "SELECT component_id, class_code, name, status, grid_code, md5(ST_AsEWKB(geom)), county_code "
    "FROM cim.city_component WHERE batch_id = %s ORDER BY component_id"
)
NODE_ROWS = (
    "SELECT point_no, network, grid_code, valve_state, md5(ST_AsEWKB(geom)) "
    "FROM cim.pipeline_node WHERE batch_id = %s ORDER BY point_no"
)
SEGMENT_ROWS = (
    "SELECT a.point_no, b.point_no, s.material, s.length_m, md5(ST_AsEWKB(s.geom)) "
    "FROM cim.pipeline_segment s "
    "JOIN cim.pipeline_node a ON (a.batch_id, a.id) = (s.batch_id, s.from_node_id) "
    "JOIN cim.pipeline_node b ON (b.batch_id, b.id) = (s.batch_id, s.to_node_id) "
    "WHERE s.batch_id = %s ORDER BY 1, 2"
)


def test_components_in_tiny_chunks_store_what_one_chunk_stores(with_grids: str, chunk_rows):
    url = with_grids
    chunk_rows(1_000_000)
    one = run_import(
        importer_for("components"), COMPONENTS, ImportOptions(dataset="chunks-comp"), url
    )
    whole = _rows(url, COMPONENT_ROWS, one.batch_id)
    # 57 chunks of the sample's 5 452 (a chunk costs tens of ms of pandas calls whatever its
    # size: chunks of 7 took 85 s here and tested no boundary that these do not)
    chunk_rows(97)
    many = run_import(
        importer_for("components"),
        COMPONENTS,
        ImportOptions(dataset="chunks-comp", replace=True),
        url,
    )
    assert many.batch_id != one.batch_id
    assert _rows(url, COMPONENT_ROWS, many.batch_id) == whole
    assert len(whole) == many.counts["city_component"] > 10 * 97
    assert {r[4] for r in whole} - {None}  # grid codes were assigned, not left empty
    assert (
        many.counts["city_component_outside_grids"]
        == one.counts["city_component_outside_grids"]
        == sum(r[4] is None for r in whole)
    )


def test_pipelines_in_tiny_chunks_store_what_one_chunk_stores(with_grids: str, chunk_rows):
    url = with_grids
    opts = dict(crs="EPSG:4547", dataset="chunks-pipes")
    chunk_rows(1_000_000)
    one = run_import(importer_for("pipelines"), PIPELINES, ImportOptions(**opts), url)
    nodes, segs = _rows(url, NODE_ROWS, one.batch_id), _rows(url, SEGMENT_ROWS, one.batch_id)
    chunk_rows(5)
    many = run_import(
        importer_for("pipelines"), PIPELINES, ImportOptions(replace=True, **opts), url
    )
    assert _rows(url, NODE_ROWS, many.batch_id) == nodes
    assert _rows(url, SEGMENT_ROWS, many.batch_id) == segs
    assert len(nodes) > 5 and len(segs) > 5
    assert many.counts["pipeline_node_outside_grids"] == one.counts["pipeline_node_outside_grids"]
    # the staged partitions' indexes were taken by ATTACH, not built a second time
    with psycopg.connect(libpq_dsn(url)) as conn:
        for table in ("pipeline_node", "pipeline_segment"):
            parent, part = conn.execute(
                "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass), "
                "(SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass)",
                (f"cim.{table}", f"cim_part.{table}_b{many.batch_id}"),
            ).fetchone()
            attached = conn.execute(
                "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
                "WHERE x.indrelid = %s::regclass",
                (f"cim_part.{table}_b{many.batch_id}",),
            ).fetchone()[0]
            assert parent == part == attached > 5, (table, parent, part, attached)


def test_a_failure_in_a_later_chunk_leaves_nothing_written(
    with_grids: str, chunk_rows, monkeypatch
):
    """The connection fails while the third chunk is made: the rows of the first two, already
    sent, are rolled back with the rest, and the error says so (no traceback)."""
    url = with_grids
    chunk_rows(250)
    make_hex, calls = bulk.ewkb_hex_arrow, []

    def failing(geoms, *args, **kwargs):
        calls.append(len(geoms))
        if len(calls) == 3:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return make_hex(geoms, *args, **kwargs)

    monkeypatch.setattr(bulk, "ewkb_hex_arrow", failing)
    before = table_fingerprint(url)
    with pytest.raises(ImportFailed, match="database error, import rolled back"):
        run_import(
            importer_for("components"), COMPONENTS, ImportOptions(dataset="chunks-fail"), url
        )
    assert calls == [250, 250, 250]
    assert table_fingerprint(url) == before
    # the partition it staged (committed on a connection of its own) was dropped after the
    # rollback
    with psycopg.connect(libpq_dsn(url)) as conn:
        assert not conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'cim_part' AND c.relkind = 'r' AND NOT c.relispartition"
        ).fetchall()
