"""``cimtwin tiles``: static tile export."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="Vector tiles: static export.", no_args_is_help=True)


@app.command("export-mvt")
def export_mvt(
    layers: str = typer.Option(
        ..., "--layers", help="comma-separated layer ids, e.g. pipelines,components"
    ),
    minzoom: int = typer.Option(12, "--minzoom", min=0, max=22),
    maxzoom: int = typer.Option(16, "--maxzoom", min=0, max=22),
    out: Path = typer.Option(..., "--out", help="FILE.pmtiles (v3) or FILE.mbtiles"),
) -> None:
    """Write the layers' vector tiles over the data's extent to a PMTiles or MBTiles file."""
    from cimtwin.tiles.export import export

    console = Console(stderr=True)
    with Progress(
        TextColumn("tiles"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
        console=console,
    ) as progress:
        task = progress.add_task("tiles", total=None, rate="")

        def total(n: int) -> None:
            progress.update(task, total=n)

        def step() -> None:
            progress.advance(task)
            t = progress.tasks[0]
            if t.elapsed:
                progress.update(task, rate=f"{t.completed / t.elapsed:,.0f} tiles/s")

        counts = export(
            [s.strip() for s in layers.split(",") if s.strip()],
            minzoom,
            maxzoom,
            out,
            on_total=total,
            on_tile=step,
        )
    console.print(
        f"{out}: {counts['tiles_written']:,} tiles written "
        f"({counts['tiles_visited']:,} visited), {out.stat().st_size:,} bytes"
    )
