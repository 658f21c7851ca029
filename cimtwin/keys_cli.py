"""``cimtwin keys``: API keys for the service's writes (and reads, when they are closed).

A key is printed once, when it is made; the database keeps only its SHA-256.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from cimtwin.errors import UserError
from cimtwin.spatial.access import ROLES

app = typer.Typer(
    help="API keys: create, list and revoke the keys that writes need "
    f"(roles {' < '.join(ROLES)}).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)


class Role(StrEnum):
    viewer = "viewer"
    editor = "editor"
    importer = "importer"
    admin = "admin"


@app.callback()
def keys() -> None:
    """API keys: create, list and revoke the keys that writes need."""


@contextmanager
def _connect() -> Iterator[psycopg.Connection]:
    """A connection to a database that is set up; failures as one line (db/connect.py)."""
    from cimtwin.db.connect import connect, require_set_up

    require_set_up()
    with connect() as conn:
        yield conn


@app.command("create")
def create(
    name: str = typer.Argument(
        ...,
        help="who or what the key is for, e.g. dispatch-desk "
        "(letters, digits, _ . @ : -; unique, never reused)",
    ),
    role: Role = typer.Option(
        ...,
        "--role",
        "-r",
        help="viewer < editor < importer < admin; a role may do what the lower ones may",
        case_sensitive=False,
    ),
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    from cimtwin.spatial.access_queries import create_key

    with _connect() as conn:
        try:
            key, record = create_key(conn, name, role.value)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    err.print(
        f"created key [bold]{record.name}[/] with role [bold]{record.role}[/] "
        f"(prefix {record.prefix}). It is shown once; send it as "
        "'Authorization: Bearer <key>' or 'X-API-Key: <key>':"
    )
    # the key alone on stdout, so that scripts can capture it
    print(key)


@app.command("list")
def list_cmd() -> None:
    """List the keys: name, role, prefix, when made and last used, and whether revoked."""
    from cimtwin.spatial.access_queries import list_keys

    with _connect() as conn:
        records = list_keys(conn)
    if not records:
        out.print("no API keys (create one with `cimtwin keys create NAME --role ROLE`)")
        return
    header = ("name", "role", "prefix", "created", "last used", "status")
    lines = [
        (
            r.name,
            r.role,
            r.prefix + "...",
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never",
            "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}",
        )
        for r in records
    ]
    if not out.is_terminal:  # for scripts: tab-separated, one key a line
        for line in (header, *lines):
            print("\t".join(line))
        return
    table = Table(*header)
    for line in lines:
        table.add_row(*line)
    out.print(table)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="name of the key to revoke"),
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    from cimtwin.spatial.access_queries import revoke_key

    with _connect() as conn:
        try:
            record = revoke_key(conn, name)
        except LookupError as exc:
            raise UserError(str(exc.args[0])) from None
    out.print(f"revoked key {record.name} ({record.role}, prefix {record.prefix})")
