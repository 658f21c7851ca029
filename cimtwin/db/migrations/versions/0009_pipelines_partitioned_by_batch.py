"""pipelines: nodes and segments stored one partition per import batch

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

A district's network is re-imported by attaching its new partitions and detaching and
dropping the old ones (``cimtwin.spatial.staging``, as city components are), not
by deleting and re-inserting its rows under every index. Keys become composite: the primary
keys are (batch_id, id), a segment's end nodes are (batch_id, from/to_node_id) in its own
batch, and a valve names the batch of the network it sits on (``network_batch_id``). Ids keep
their sequences, so every id the API and the 3D tiles carry stays the same.

The existing rows move into per-batch partitions; rows whose batch row was deleted (the old
foreign key set them NULL) are given one batch row, ``legacy:rows-without-batch``.
"""

from collections.abc import Sequence

from alembic import op

from cimtwin.settings import get_settings

SCHEMA = get_settings().db_schema
PART = f"{SCHEMA}_part"

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = f'"{SCHEMA}"'
P = f'"{PART}"'

#: indexes of the partitioned tables (name, table, column list, method)
INDEXES = (
    ("idx_pipeline_node_geom", "pipeline_node", "geom", "gist"),
    ("ix_pipeline_node_appurtenance", "pipeline_node", "appurtenance", "btree"),
    ("ix_pipeline_node_grid_code", "pipeline_node", "grid_code", "btree"),
    ("ix_pipeline_node_network", "pipeline_node", "network", "btree"),
    ("ix_pipeline_node_id", "pipeline_node", "id", "btree"),
    ("ix_pipeline_node_dataset_point_no", "pipeline_node", "dataset, point_no", "btree"),
    ("idx_pipeline_segment_geom", "pipeline_segment", "geom", "gist"),
    ("ix_pipeline_segment_dataset", "pipeline_segment", "dataset", "btree"),
    ("ix_pipeline_segment_network", "pipeline_segment", "network", "btree"),
    ("ix_pipeline_segment_from_node_id", "pipeline_segment", "from_node_id", "btree"),
    ("ix_pipeline_segment_to_node_id", "pipeline_segment", "to_node_id", "btree"),
    ("ix_pipeline_segment_id", "pipeline_segment", "id", "btree"),
)

#: the plain tables' indexes (revision 0008), for the downgrade
PLAIN_INDEXES = (
    ("idx_pipeline_node_geom", "pipeline_node", "geom", "gist"),
    ("ix_pipeline_node_appurtenance", "pipeline_node", "appurtenance", "btree"),
    ("ix_pipeline_node_batch_id", "pipeline_node", "batch_id", "btree"),
    ("ix_pipeline_node_grid_code", "pipeline_node", "grid_code", "btree"),
    ("ix_pipeline_node_network", "pipeline_node", "network", "btree"),
    ("idx_pipeline_segment_geom", "pipeline_segment", "geom", "gist"),
    ("ix_pipeline_segment_batch_id", "pipeline_segment", "batch_id", "btree"),
    ("ix_pipeline_segment_dataset", "pipeline_segment", "dataset", "btree"),
    ("ix_pipeline_segment_network", "pipeline_segment", "network", "btree"),
    ("ix_pipeline_segment_from_node_id", "pipeline_segment", "from_node_id", "btree"),
    ("ix_pipeline_segment_to_node_id", "pipeline_segment", "to_node_id", "btree"),
)


def _move_aside(table: str) -> None:
    """The old table out of the way (its sequence kept): into the partition schema."""
    op.execute(f"ALTER SEQUENCE {S}.{table}_id_seq OWNED BY NONE")
    op.execute(f"ALTER TABLE {S}.{table} SET SCHEMA {P}")
    op.execute(f"ALTER TABLE {P}.{table} RENAME TO {table}_old")


def _new_table(table: str, partitioned: bool) -> None:
    """The table again, with the old one's columns, defaults and checks."""
    tail = " PARTITION BY LIST (batch_id)" if partitioned else ""
    op.execute(
        f"CREATE TABLE {S}.{table} (LIKE {P}.{table}_old INCLUDING DEFAULTS "
        f"INCLUDING CONSTRAINTS){tail}"
    )
    op.execute(f"ALTER SEQUENCE {S}.{table}_id_seq OWNED BY {S}.{table}.id")


def _indexes(which) -> None:
    for name, table, cols, method in which:
        op.execute(f"CREATE INDEX {name} ON {S}.{table} USING {method} ({cols})")


def upgrade() -> None:
    op.execute(
        f"""ALTER TABLE {S}.pipeline_valve
              DROP CONSTRAINT fk_pipeline_valve_node_id_pipeline_node,
              DROP CONSTRAINT fk_pipeline_valve_segment_id_pipeline_segment,
              ADD COLUMN network_batch_id bigint"""
    )
    op.execute(
        f"""ALTER TABLE {S}.pipeline_segment
              DROP CONSTRAINT fk_pipeline_segment_from_node_id_pipeline_node,
              DROP CONSTRAINT fk_pipeline_segment_to_node_id_pipeline_node"""
    )
    # rows whose batch row is gone: one batch row for them (a partition needs a batch)
    op.execute(
        f"""INSERT INTO {S}.import_batch (kind, dataset, source_files, sha256, format,
                source_crs, feature_count, error_count, warning_count, counts, options, status,
                imported_by, message, finished_at)
            SELECT 'pipelines', 'legacy:rows-without-batch', '[]', '', 'unknown', 'unknown',
                   n, 0, 0, '{{}}', '{{}}', 'succeeded', 'migration 0009',
                   'pipeline rows whose import batch was deleted', now()
            FROM (SELECT (SELECT count(*) FROM {S}.pipeline_node WHERE batch_id IS NULL)
                       + (SELECT count(*) FROM {S}.pipeline_segment WHERE batch_id IS NULL) AS n
                 ) c WHERE n > 0"""
    )
    for table in ("pipeline_node", "pipeline_segment"):
        op.execute(
            f"""UPDATE {S}.{table} SET batch_id = (SELECT max(id) FROM {S}.import_batch
                    WHERE dataset = 'legacy:rows-without-batch') WHERE batch_id IS NULL"""
        )
    for table in ("pipeline_node", "pipeline_segment"):
        _move_aside(table)
        _new_table(table, partitioned=True)
        op.execute(f"ALTER TABLE {S}.{table} ALTER COLUMN batch_id SET NOT NULL")
        op.execute(
            f"""ALTER TABLE {S}.{table}
                  ADD CONSTRAINT pk_{table} PRIMARY KEY (batch_id, id),
                  ADD CONSTRAINT fk_{table}_batch_id_import_batch FOREIGN KEY (batch_id)
                      REFERENCES {S}.import_batch (id),
                  ADD CONSTRAINT fk_{table}_subtype_pipeline_type FOREIGN KEY (subtype)
                      REFERENCES {S}.pipeline_type (code)"""
        )
    op.execute(
        f"""ALTER TABLE {S}.pipeline_node ADD CONSTRAINT uq_pipeline_node_batch_id_point_no
              UNIQUE (batch_id, point_no)"""
    )
    for end in ("from", "to"):
        op.execute(
            f"""ALTER TABLE {S}.pipeline_segment ADD CONSTRAINT fk_pipeline_segment_{end}_node
                  FOREIGN KEY (batch_id, {end}_node_id)
                  REFERENCES {S}.pipeline_node (batch_id, id) ON DELETE CASCADE"""
        )
    _indexes(INDEXES)
    # the rows, one partition per batch: nodes first (segments' keys point at them)
    for table in ("pipeline_node", "pipeline_segment"):
        op.execute(
            f"""DO $$
            DECLARE b bigint;
            BEGIN
              FOR b IN SELECT DISTINCT batch_id FROM {P}.{table}_old LOOP
                EXECUTE format('CREATE TABLE {P}.%I (LIKE {S}.{table} INCLUDING DEFAULTS '
                               'INCLUDING CONSTRAINTS)', '{table}_b' || b);
                EXECUTE format('INSERT INTO {P}.%I SELECT * FROM {P}.{table}_old '
                               'WHERE batch_id = %s', '{table}_b' || b, b);
                EXECUTE format('ALTER TABLE {S}.{table} ATTACH PARTITION {P}.%I '
                               'FOR VALUES IN (%s)', '{table}_b' || b, b);
              END LOOP;
            END $$"""
        )
    op.execute(f"DROP TABLE {P}.pipeline_segment_old")
    op.execute(f"DROP TABLE {P}.pipeline_node_old")
    op.execute(
        f"""UPDATE {S}.pipeline_valve v SET network_batch_id = s.batch_id
            FROM {S}.pipeline_segment s WHERE s.id = v.segment_id"""
    )
    op.execute(
        f"""ALTER TABLE {S}.pipeline_valve
              ALTER COLUMN network_batch_id SET NOT NULL,
              ADD CONSTRAINT fk_pipeline_valve_segment FOREIGN KEY (network_batch_id, segment_id)
                  REFERENCES {S}.pipeline_segment (batch_id, id) ON DELETE CASCADE,
              ADD CONSTRAINT fk_pipeline_valve_node FOREIGN KEY (network_batch_id, node_id)
                  REFERENCES {S}.pipeline_node (batch_id, id) ON DELETE CASCADE"""
    )
    op.execute(
        f"CREATE INDEX ix_pipeline_valve_network_batch_id ON {S}.pipeline_valve (network_batch_id)"
    )


def downgrade() -> None:
    op.execute(
        f"""ALTER TABLE {S}.pipeline_valve
              DROP CONSTRAINT fk_pipeline_valve_segment,
              DROP CONSTRAINT fk_pipeline_valve_node,
              DROP COLUMN network_batch_id"""
    )
    for table in ("pipeline_segment", "pipeline_node"):
        op.execute(f"ALTER SEQUENCE {S}.{table}_id_seq OWNED BY NONE")
        op.execute(f"ALTER TABLE {S}.{table} RENAME TO {table}_old")
        op.execute(f"ALTER TABLE {S}.{table}_old RENAME CONSTRAINT pk_{table} TO pk_{table}_old")
    for table in ("pipeline_node", "pipeline_segment"):
        op.execute(
            f"CREATE TABLE {S}.{table} (LIKE {S}.{table}_old INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS)"
        )
        op.execute(f"ALTER SEQUENCE {S}.{table}_id_seq OWNED BY {S}.{table}.id")
        op.execute(f"INSERT INTO {S}.{table} SELECT * FROM {S}.{table}_old")
        op.execute(f"ALTER TABLE {S}.{table} ALTER COLUMN batch_id DROP NOT NULL")
        op.execute(
            f"""ALTER TABLE {S}.{table}
                  ADD CONSTRAINT pk_{table} PRIMARY KEY (id),
                  ADD CONSTRAINT fk_{table}_batch_id_import_batch FOREIGN KEY (batch_id)
                      REFERENCES {S}.import_batch (id) ON DELETE SET NULL,
                  ADD CONSTRAINT fk_{table}_subtype_pipeline_type FOREIGN KEY (subtype)
                      REFERENCES {S}.pipeline_type (code)"""
        )
    op.execute(
        f"""ALTER TABLE {S}.pipeline_node ADD CONSTRAINT uq_pipeline_node_dataset_point_no
              UNIQUE (dataset, point_no)"""
    )
    for end in ("from", "to"):
        op.execute(
            f"""ALTER TABLE {S}.pipeline_segment
                  ADD CONSTRAINT fk_pipeline_segment_{end}_node_id_pipeline_node
                  FOREIGN KEY ({end}_node_id) REFERENCES {S}.pipeline_node (id)
                  ON DELETE CASCADE"""
        )
    op.execute(f"DROP TABLE {S}.pipeline_segment_old CASCADE")
    op.execute(f"DROP TABLE {S}.pipeline_node_old CASCADE")
    _indexes(PLAIN_INDEXES)
    op.execute(
        f"""ALTER TABLE {S}.pipeline_valve
              ADD CONSTRAINT fk_pipeline_valve_node_id_pipeline_node FOREIGN KEY (node_id)
                  REFERENCES {S}.pipeline_node (id) ON DELETE CASCADE,
              ADD CONSTRAINT fk_pipeline_valve_segment_id_pipeline_segment
                  FOREIGN KEY (segment_id) REFERENCES {S}.pipeline_segment (id)
                  ON DELETE CASCADE"""
    )
