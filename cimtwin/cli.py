"""The ``cimtwin`` command: one entry point, a sub-command per job."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from cimtwin.errors import UserError

app = typer.Typer(
    name="cimtwin",
    help="cimtwin: CIM / digital-twin spatial data service on PostGIS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)


def _mount() -> None:
    from cimtwin.api.cli import serve
    from cimtwin.db.cli import app as db_app
    from cimtwin.importers.cli import import_command
    from cimtwin.keys_cli import app as keys_app
    from cimtwin.samples.cli import app as samples_app
    from cimtwin.tiles.cli import app as tiles_app

    app.add_typer(db_app, name="db")
    app.add_typer(samples_app, name="samples")
    app.add_typer(tiles_app, name="tiles")
    app.add_typer(keys_app, name="keys")
    app.command("serve")(serve)
    app.command("import")(import_command)


_mount()


def main() -> None:
    """Run the CLI; user mistakes print one clear line and exit 2, no traceback."""
    try:
        app()
    except UserError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
