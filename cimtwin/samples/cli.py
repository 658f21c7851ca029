"""``cimtwin samples``: placeholder, replaced by the generator's CLI."""

import typer

app = typer.Typer(help="Sample data sets.", no_args_is_help=True)
