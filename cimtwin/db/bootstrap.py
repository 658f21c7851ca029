"""Create the database and its extensions; idempotent, so set-up can run any number of times."""

from __future__ import annotations

import psycopg
from psycopg import sql

from cimtwin.db.connect import one_row_sync
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
from cimtwin.errors import UserError

EXTENSIONS = ("postgis", "postgis_sfcgal", "pgrouting")
#: created when the server has them: unaccent serves CQL2 ACCENTI() (PostgreSQL's contrib,
#: part of Debian's postgresql-<version> package); without it ACCENTI answers 400
OPTIONAL_EXTENSIONS = ("unaccent",)


def server_reachable(url: str | None = None) -> bool:
    u = sqlalchemy_url(url)
    try:
        with psycopg.connect(libpq_dsn(str(u.set(database="postgres"))), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def create_database(url: str | None = None) -> bool:
    """Create the URL's database when absent; returns True when it was created."""
    u = sqlalchemy_url(url)
    name = u.database
    if not name:
        raise UserError("CIMTWIN_DATABASE_URL names no database")
    admin = libpq_dsn(str(u.set(database="postgres")))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(url: str) -> None:
    u = sqlalchemy_url(url)
    name = u.database
    if not name:
        raise UserError("the database URL names no database")
    admin = libpq_dsn(str(u.set(database="postgres")))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def missing_extensions(url: str | None = None) -> list[str]:
    """Extensions the server cannot provide (their packages are not installed)."""
    with psycopg.connect(libpq_dsn(url)) as conn:
        have = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    return [e for e in EXTENSIONS if e not in have]


def create_extensions(url: str | None = None) -> None:
    missing = missing_extensions(url)
    if missing:
        raise UserError(
            "the PostgreSQL server lacks the extension(s) "
            + ", ".join(missing)
            + ": install the Debian packages postgresql-<version>-postgis-3 and "
            "postgresql-<version>-pgrouting (scripts/setup.sh does this when run as root)"
        )
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        for ext in (*EXTENSIONS, *(e for e in OPTIONAL_EXTENSIONS if e in have)):
            conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(sql.Identifier(ext))
            )


def postgis_version(url: str | None = None) -> str:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return one_row_sync(conn, "SELECT postgis_lib_version()")[0]


def copy_database(source_url: str, url: str) -> str:
    """Drop the URL's database and make it a copy of ``source_url``'s (CREATE DATABASE ...
    TEMPLATE: a file copy, far quicker than migrating a new database; the source must have no
    open connection). Returns the URL."""
    source, target = sqlalchemy_url(source_url).database, sqlalchemy_url(url).database
    if not source or not target:
        raise UserError("a database URL names no database")
    drop_database(url)
    admin = libpq_dsn(str(sqlalchemy_url(url).set(database="postgres")))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(target), sql.Identifier(source)
            )
        )
    return url


def recreate_database(url: str, migrated: bool = True) -> str:
    """Drop and create the URL's database with its extensions (and the schema at head): the
    clean slate tests and benchmarks start from. Returns the URL."""
    from cimtwin.db import migrate

    drop_database(url)
    create_database(url)
    create_extensions(url)
    if migrated:
        migrate.upgrade(url)
    return url
