"""Connection URLs and engines for SQLAlchemy (importers, migrations) and psycopg (API)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from cimtwin.errors import UserError
from cimtwin.settings import get_settings

EXAMPLE_URL = "postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE"


def sqlalchemy_url(url: str | None = None) -> URL:
    """The configured URL with the psycopg 3 driver, whatever the user wrote.

    A URL that does not parse, or names another database system, is the user's to fix: the
    error names the setting (CIMTWIN_DATABASE_URL when it came from there)."""
    setting = "CIMTWIN_DATABASE_URL" if url is None else "the database URL"
    raw = url or get_settings().database_url
    try:
        u = make_url(raw)
    except ArgumentError:
        raise UserError(f"{setting} {raw!r} is not a URL: write it as {EXAMPLE_URL}") from None
    if u.get_backend_name() not in ("postgresql", "postgres"):
        raise UserError(
            f"{setting} {u.render_as_string(hide_password=True)!r} is not a "
            f"PostgreSQL URL: write it as {EXAMPLE_URL}"
        )
    return u.set(drivername="postgresql+psycopg")


def libpq_dsn(url: str | None = None) -> str:
    """The same URL as a libpq connection string for psycopg."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True)
