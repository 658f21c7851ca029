"""``cimtwin db``: create the database, run and inspect migrations."""

from __future__ import annotations

import typer
from rich.console import Console

from cimtwin.db import bootstrap, connect, migrate
from cimtwin.db.engine import sqlalchemy_url
from cimtwin.errors import UserError

app = typer.Typer(help="Database: set-up and migrations.", no_args_is_help=True)
out = Console()


def _require_server() -> None:
    """The server answers and the role may log in (to the maintenance database)."""
    admin = sqlalchemy_url().set(database="postgres").render_as_string(hide_password=False)
    with connect.connect(admin):
        pass


def _require_postgis() -> None:
    """Migrations need PostGIS in the database; without it they fail half-way."""
    with connect.connect() as conn:
        if not connect.has_postgis(conn):
            name = sqlalchemy_url().database
            raise UserError(
                f'database "{name}" at {connect.shown_url()} has no PostGIS extension: '
                f"{connect.SETUP_HINT} (creates the extensions), or CREATE EXTENSION postgis "
                "in it as a superuser"
            )


@app.command()
def setup() -> None:
    """Create the database and its extensions (postgis, postgis_sfcgal, pgrouting); migrate."""
    _require_server()
    created = bootstrap.create_database()
    bootstrap.create_extensions()
    migrate.upgrade()
    url = sqlalchemy_url().render_as_string(hide_password=True)
    out.print(
        f"database {'created' if created else 'present'}: {url}; "
        f"PostGIS {bootstrap.postgis_version()}; schema at head"
    )


@app.command()
def upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply migrations up to REVISION against CIMTWIN_DATABASE_URL."""
    _require_postgis()
    migrate.upgrade(revision=revision)


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="target revision, 'base' drops all"),
) -> None:
    """Revert migrations down to REVISION."""
    with connect.connect():
        pass
    migrate.downgrade(revision=revision)


@app.command()
def status() -> None:
    """Show the current migration revision."""
    from cimtwin.settings import get_settings

    with connect.connect() as conn:
        revision = connect.schema_revision(conn, get_settings().db_schema)
    if revision is None:
        raise connect.not_set_up()
    heads = migrate.heads()
    out.print(
        f"{revision} (head)"
        if revision in heads
        else f"{revision} (head is {', '.join(heads)}: run `cimtwin db upgrade`)"
    )
