"""Connection URLs and engines for SQLAlchemy (importers, migrations) and psycopg (API)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from cimtwin.settings import get_settings


def sqlalchemy_url(url: str | None = None) -> URL:
    """The configured URL with the psycopg 3 driver, whatever the user wrote."""
    u = make_url(url or get_settings().database_url)
    if u.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {u.render_as_string(hide_password=True)}")
    return u.set(drivername="postgresql+psycopg")


def libpq_dsn(url: str | None = None) -> str:
    """The same URL as a libpq connection string for psycopg."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True)
