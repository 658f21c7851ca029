"""The ``cimtwin`` command: one entry point, a sub-command per job.

Sub-commands are imported only when run (or asked for their own ``--help``): listing them
must not load pandas, GeoPandas or GDAL, which take seconds to import.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand, TyperGroup

from cimtwin.errors import CimtwinError

if TYPE_CHECKING:
    # Typer vendors its own Click (typer._click), and TyperGroup's methods take its classes;
    # the separately installed ``click`` package is a different one. Typer exports no public
    # aliases for these, so they are imported for annotations only.
    from typer._click import Command, Context, HelpFormatter

#: name -> ("module:attribute" of a Typer app or a command function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("cimtwin.api.cli:serve", "Serve the API (OpenAPI docs at /docs)."),
    "import": (
        "cimtwin.importers.cli:import_command",
        "Validate files and load them into the twin in one transaction (all or nothing).",
    ),
    "db": ("cimtwin.db.cli:app", "Database: set-up and migrations."),
    "samples": (
        "cimtwin.samples.cli:app",
        "Synthetic sample data sets (Shenzhen North Station district).",
    ),
    "tiles": ("cimtwin.tiles.cli:app", "Vector tiles (static export) and 3D Tiles (build-3d)."),
    "keys": (
        "cimtwin.keys_cli:app",
        "API keys: create, list and revoke the keys that writes "
        "need (roles viewer < editor < importer < admin).",
    ),
}


def load_command(name: str) -> Command:
    """The click command behind sub-command ``name``, importing its module now."""
    module, _, attr = COMMANDS[name][0].partition(":")
    obj = getattr(import_module(module), attr)
    parent = typer.Typer()
    parent.callback()(lambda: None)  # a group, so that a one-command app stays a group
    if isinstance(obj, typer.Typer):
        parent.add_typer(obj, name=name)
    else:
        parent.command(name)(obj)
    return typer.main.get_group(parent).commands[name]


class LazyGroup(TyperGroup):
    """Lists the sub-commands from :data:`COMMANDS` and imports one only when it runs."""

    _listing = False
    _loaded: dict[str, Command]

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # the overview needs names and one-line help only
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
        loaded = self.__dict__.setdefault("_loaded", {})
        if cmd_name not in loaded:
            loaded[cmd_name] = load_command(cmd_name)
        return loaded[cmd_name]

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="cimtwin",
    cls=LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def cimtwin() -> None:
    """cimtwin: CIM / digital-twin spatial data service on PostGIS."""


def main() -> None:
    """Run the CLI; user mistakes print one clear line and exit 2, no traceback."""
    try:
        app()
    except CimtwinError as exc:
        from rich.console import Console
        from rich.markup import escape

        # one line whatever the terminal width; the message is text, not markup
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
