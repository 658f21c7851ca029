"""Connecting for the command line: failures as one line that says what is wrong and what to
do (server down, no such database or role, wrong password, database not set up)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
from cimtwin.errors import UserError

SETUP_HINT = "run `cimtwin db setup`"
#: the table every migrated database has (the last revision applied)
VERSION_TABLE = "alembic_version"


def shown_url(url: str | None = None) -> str:
    """The URL as the user may see it: no password."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=True)


def explain(exc: psycopg.Error, url: str | None = None) -> UserError:
    """A connection or statement failure as the user's mistake to fix, in one line."""
    where = shown_url(url)
    u = sqlalchemy_url(url)
    text = str(exc)
    if re.search(r'database "[^"]*" does not exist', text):
        return UserError(
            f'database "{u.database}" does not exist at {where}: {SETUP_HINT} '
            "(creates it) or set CIMTWIN_DATABASE_URL"
        )
    m = re.search(r'role "([^"]*)" does not exist', text)
    if m:
        return UserError(
            f'role "{m.group(1)}" does not exist on the PostgreSQL server at '
            f"{where}: create it (CREATE ROLE ... LOGIN) or set "
            "CIMTWIN_DATABASE_URL to an existing role"
        )
    if "password authentication failed" in text or "no password supplied" in text:
        return UserError(
            f"PostgreSQL at {where} refused the password of role "
            f'"{u.username}": correct it in CIMTWIN_DATABASE_URL'
        )
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return not_set_up(url)
    if isinstance(exc, psycopg.OperationalError) and "connection" in text.lower():
        first = text.strip().splitlines()[-1].strip() if text.strip() else ""
        return UserError(
            f"no PostgreSQL answers at {where} (is it running? set CIMTWIN_DATABASE_URL): {first}"
        )
    return UserError(f"database error at {where}: {' '.join(text.split())}")


def not_set_up(url: str | None = None) -> UserError:
    u = sqlalchemy_url(url)
    return UserError(
        f'database "{u.database}" at {shown_url(url)} is not set up (no cimtwin '
        f"schema): {SETUP_HINT}"
    )


@contextmanager
def connect(url: str | None = None, **kwargs) -> Iterator[psycopg.Connection]:
    """``psycopg.connect`` whose failures (connecting or inside the block) are UserErrors."""
    try:
        with psycopg.connect(libpq_dsn(url), connect_timeout=5, **kwargs) as conn:
            yield conn
    except (
        psycopg.OperationalError,
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
    ) as exc:
        raise explain(exc, url) from None


def one_row_sync(conn: psycopg.Connection, query: Any, params: Any = None) -> tuple:
    """:func:`cimtwin.spatial.sql_toolkit.one_row` on a synchronous connection: the row of a
    statement that always returns one (an aggregate without GROUP BY, a function call); raises
    :class:`RuntimeError` when none came, which would be a bug."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"a statement expected to return one row returned none: {query!r}")
    return row


def schema_revision(conn: psycopg.Connection, schema: str) -> str | None:
    """The migration revision the database is at, or None when it was never migrated."""
    table = one_row_sync(conn, "SELECT to_regclass(%s)", (f'"{schema}".{VERSION_TABLE}',))[0]
    if table is None:
        return None
    row = conn.execute(f'SELECT version_num FROM "{schema}".{VERSION_TABLE}').fetchone()
    return row[0] if row else None


def require_set_up(url: str | None = None) -> None:
    """Refuse to go on against a database that does not exist, was never migrated or is at
    an older schema revision than this code (its tables would be missing columns or tables)."""
    from cimtwin.db.migrate import heads
    from cimtwin.settings import get_settings

    with connect(url) as conn:
        revision = schema_revision(conn, get_settings().db_schema)
    if revision is None:
        raise not_set_up(url)
    head = heads()[0]
    if revision != head:
        u = sqlalchemy_url(url)
        raise UserError(
            f'database "{u.database}" at {shown_url(url)} is at schema revision {revision}, '
            f"this cimtwin needs {head}: run `cimtwin db upgrade`"
        )


def has_postgis(conn: psycopg.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone() is not None
    )
