"""A batch's partition built outside the import's transaction, then attached inside it.

Inside one transaction PostgreSQL works on one core: the COPY, then ``ATTACH PARTITION``
building every index one after the other (a district's pipelines: 7 and 8 indexes, 6 s).
Here the new partition is a committed table made on connections of its own: its rows are
COPYed there, its indexes and unique keys are built on two connections at once, and the next
table's COPY starts while they build. The import's transaction then only attaches it: the
indexes match the parent's and are taken as they are, a ``CHECK (batch_id = N)`` spares the
scan of the partition bound, and what needs the import's own rows (the foreign keys to the
batch row, the segments' end nodes) is checked by ``ATTACH`` as before.

Nothing half-written: the import's transaction holds a lock named after its batch
(:func:`claim`) until it commits or rolls back. A staged table whose batch is no longer
claimed and that is not a partition is a failed import's leftover: the failing import drops
its own after its rollback (:func:`discard`), and every import drops any it finds (a killed
process leaves them) before it stages its own. They live in the ``*_part`` schema, which no
query of the service reads.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import psycopg
from psycopg import sql

from cimtwin.spatial.base import Base, schema_of, table_of
from cimtwin.spatial.bulk import copy_frames, partition_name, qualified

#: the advisory-lock class of staged partitions (the second key is the batch id)
LOCK = "cimtwin-staging"
#: connections building a staged table's indexes at once
BUILDERS = 2


def claim(conn: psycopg.Connection, batch_id: int) -> None:
    """Mark ``batch_id``'s staged tables as in use until ``conn``'s transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s::int)", (LOCK, batch_id))


def side_connection(conn: psycopg.Connection, purpose: str) -> psycopg.Connection:
    """A connection to ``conn``'s database, in autocommit: what it makes is committed."""
    params = conn.info.get_parameters()
    password = conn.pgconn.password
    if password:
        params["password"] = password.decode()
    params["application_name"] = f"cimtwin-{purpose}"
    return psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=True)


def drop_leftovers(conn: psycopg.Connection, models: Sequence[type[Base]]) -> None:
    """Drop the staged tables of ``models`` that no running import claims (``conn`` in
    autocommit: each batch's lock is tried and the table re-checked in one transaction)."""
    for model in models:
        conn.execute(
            sql.SQL(
                """DO $$ DECLARE r record; BEGIN
                FOR r IN SELECT c.oid, substring(c.relname FROM '_b([0-9]+)$')::bigint AS b
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = {schema} AND c.relkind = 'r' AND NOT c.relispartition
                    AND c.relname ~ {pattern}
                LOOP
                  IF pg_try_advisory_xact_lock(hashtext({lock}), r.b::int)
                     AND NOT (SELECT relispartition FROM pg_class WHERE oid = r.oid) THEN
                    EXECUTE format('DROP TABLE IF EXISTS %s', r.oid::regclass);
                  END IF;
                END LOOP; END $$"""
            ).format(
                schema=sql.Literal(f"{schema_of(model)}_part"),
                pattern=sql.Literal(f"^{re.escape(table_of(model).name)}_b[0-9]+$"),
                lock=sql.Literal(LOCK),
            )
        )


def discard(conn: psycopg.Connection, models: Sequence[type[Base]]) -> None:
    """After an import's rollback: drop what it staged (and any other unclaimed leftover)."""
    with contextlib.suppress(psycopg.Error), side_connection(conn, "staging-cleanup") as side:
        side.execute("SET lock_timeout = '5s'")
        drop_leftovers(side, models)  # if it cannot, the next import drops them


def _build_statements(conn: psycopg.Connection, model: type[Base], target) -> list[sql.Composed]:
    """The parent's unique keys (as constraints, which ATTACH requires to take an index) and
    its other indexes, as statements on ``target``; the largest builds first."""
    parent = f"{schema_of(model)}.{table_of(model).name}"
    keys = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
        "AND contype IN ('p', 'u') ORDER BY contype, conname",
        (parent,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
        "ORDER BY (SELECT amname FROM pg_am a JOIN pg_class k ON k.relam = a.oid "
        "WHERE k.oid = i.indexrelid) <> 'gist', i.indexrelid::regclass::text",
        (parent,),
    ).fetchall()
    out: list[sql.Composed] = [
        sql.SQL("ALTER TABLE {} ADD {}").format(target, sql.SQL(k)) for (k,) in keys
    ]
    for (definition,) in indexes:
        m = re.match(r"CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ (USING .*)$", definition)
        if not m:
            raise RuntimeError(f"{parent}: cannot stage the index {definition!r}")
        out.append(
            sql.SQL("CREATE {}INDEX ON {} {}").format(
                sql.SQL(m.group(1) or ""), target, sql.SQL(m.group(2))
            )
        )
    return out


@dataclass
class StagedPartition:
    """A committed table holding one batch of ``model``, its indexes building."""

    model: type[Base]
    batch_id: int
    name: sql.Composed
    rows: int
    nullable: Sequence[str]
    connections: list[psycopg.Connection] = field(default_factory=list)
    builds: list[Future] = field(default_factory=list)
    pool: ThreadPoolExecutor | None = None

    def wait(self) -> None:
        """Until every index is built; a failed build is raised here."""
        try:
            for f in self.builds:
                f.result()
        finally:
            self.close()

    def attach(self, conn: psycopg.Connection, before_attach=None) -> int:
        """In the import's transaction: ``before_attach(conn, name)``, then ATTACH."""
        self.wait()
        # ATTACH checks the foreign keys to rows of this import with one join each: in memory
        conn.execute("SET LOCAL work_mem = '64MB'")
        if before_attach:
            before_attach(conn, self.name)
        for c in self.nullable:
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
                    self.name, sql.Identifier(table_of(self.model).columns[c].name)
                )
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                qualified(self.model), self.name, sql.Literal(int(self.batch_id))
            )
        )
        return self.rows

    def close(self) -> None:
        """Wait for the builds (their errors are :meth:`wait`'s) and close the connections."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        for c in self.connections:
            c.close()
        self.connections = []


def stage(
    conn: psycopg.Connection,
    model: type[Base],
    frames: pd.DataFrame | Iterable[pd.DataFrame],
    batch_id: int,
    nullable: Sequence[str] = (),
    copied: Callable[[], None] | None = None,
) -> StagedPartition:
    """COPY one batch of ``model`` into a committed table and start building its indexes.

    ``conn`` is the import's connection: it must have :func:`claim`-ed ``batch_id``. The
    ``nullable`` columns may arrive NULL (they must hold a value before the attach).
    ``copied()`` runs once the rows are in, before any index is built: a streamed import's
    verdict, so a refused one does not wait for indexes it will drop."""
    name = partition_name(model, batch_id)
    copier = side_connection(conn, "staging")
    staged = StagedPartition(model, batch_id, name, 0, tuple(nullable), [copier])
    try:
        drop_leftovers(copier, [model])
        check = sql.Identifier(f"{table_of(model).name}_b{int(batch_id)}_in_batch")
        copier.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                "CONSTRAINT {} CHECK (batch_id = {}))"
            ).format(name, qualified(model), check, sql.Literal(int(batch_id)))
        )
        for c in nullable:
            copier.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
                    name, sql.Identifier(table_of(model).columns[c].name)
                )
            )
        batches = [frames] if isinstance(frames, pd.DataFrame) else frames
        staged.rows = copy_frames(
            copier, model, (f.assign(batch_id=batch_id) for f in batches), target=name
        )
        if copied is not None:
            copied()
        statements = _build_statements(copier, model, name)
        builders = [copier] + [
            side_connection(conn, "staging") for _ in range(min(BUILDERS, len(statements)) - 1)
        ]
        staged.connections = builders
        staged.pool = ThreadPoolExecutor(len(builders))
        for k, builder in enumerate(builders):
            mine = statements[k :: len(builders)]
            staged.builds.append(staged.pool.submit(_run_all, builder, mine))
    except BaseException:
        staged.close()
        raise
    return staged


def _run_all(conn: psycopg.Connection, statements: list[sql.Composed]) -> None:
    for s in statements:
        conn.execute(s)
