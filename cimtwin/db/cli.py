"""``cimtwin db``: create the database, run and inspect migrations."""

from __future__ import annotations

import typer
from rich.console import Console

from cimtwin.db import bootstrap, migrate
from cimtwin.db.engine import sqlalchemy_url
from cimtwin.errors import UserError

app = typer.Typer(help="Database: set-up and migrations.", no_args_is_help=True)
out = Console()


def _require_server() -> None:
    if not bootstrap.server_reachable():
        url = sqlalchemy_url().render_as_string(hide_password=True)
        raise UserError(f"no PostgreSQL answers at {url} (set CIMTWIN_DATABASE_URL)")


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
    _require_server()
    migrate.upgrade(revision=revision)


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="target revision, 'base' drops all"),
) -> None:
    """Revert migrations down to REVISION."""
    _require_server()
    migrate.downgrade(revision=revision)


@app.command()
def status() -> None:
    """Show the current migration revision."""
    _require_server()
    migrate.current()
