"""Pipeline rows written by hand in tests: nodes and segments live one partition per import
batch, so a hand-made network first gets a batch row and its two partitions."""

from __future__ import annotations

from typing import Any

from cimtwin.spatial.model import SCHEMA
from cimtwin.spatial.pipeline_network import segment_end_keys_sql


def network_batch(execute: Any, dataset: str) -> int:
    """A succeeded pipelines batch for ``dataset`` with empty node and segment partitions;
    ``execute(sql, params)`` runs one statement and returns its cursor/result (psycopg's
    ``conn.execute``, or a SQLAlchemy connection wrapped by the caller)."""
    batch_id = execute(
        f"INSERT INTO {SCHEMA}.import_batch (kind, dataset, source_files, sha256, format, "
        "source_crs, feature_count, error_count, warning_count, counts, options, status, "
        "imported_by) VALUES ('pipelines', %s, '[]', '', 'test', 'EPSG:4547', 0, 0, 0, '{}', "
        "'{}', 'succeeded', 'tests') RETURNING id",
        (dataset,),
    ).fetchone()[0]
    for table in ("pipeline_node", "pipeline_segment"):
        execute(
            f'CREATE TABLE "{SCHEMA}_part".{table}_b{int(batch_id)} PARTITION OF '
            f"{SCHEMA}.{table} FOR VALUES IN ({int(batch_id)})",
            None,
        )
    # the end-node keys of the pair, as the importer adds them
    part = f'"{SCHEMA}_part"'
    execute(
        segment_end_keys_sql(
            f"{part}.pipeline_segment_b{int(batch_id)}", f"{part}.pipeline_node_b{int(batch_id)}"
        ),
        None,
    )
    return int(batch_id)
