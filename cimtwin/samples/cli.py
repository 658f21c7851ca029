"""``cimtwin samples``: write the synthetic North Station district in survey delivery formats."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cimtwin.samples.generator import STEPS, generate
from cimtwin.samples.spec import DEFAULT_SEED

app = typer.Typer(
    help="Synthetic sample data sets (Shenzhen North Station district).", no_args_is_help=True
)
console = Console()


@app.callback()
def samples() -> None:
    """Synthetic sample data sets (Shenzhen North Station district)."""


class Scale(StrEnum):
    sample = "sample"
    district = "district"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {c}" for k, c in v.items())
    return "" if v is None else str(v)


GENERATE_HELP = (
    "Generate a synthetic Shenzhen North Station district as a survey delivery: CJJ 61 "
    "pipeline point/line tables (CSV UTF-8 and GBK, XLSX), GeoPackages and Shapefiles (work "
    "grids, parcels, buildings, metro, city components), incidents GeoJSON, README.md and "
    "manifest.json. EPSG:4547, 1985 heights; the same seed gives byte-identical files."
)


@app.command("generate", help=GENERATE_HELP)
def generate_cmd(
    out_dir: Path = typer.Argument(
        ...,
        help="Folder to write into (created if missing; a "
        "folder from an earlier run is cleaned first).",
    ),
    scale: Scale = typer.Option(
        Scale.sample,
        "--scale",
        help="sample: ~1.6 x 1.2 km around "
        "the station (committed in data_samples/); district: a "
        "12 km district at real scale for benchmarks (never commit).",
    ),
    seed: int = typer.Option(
        DEFAULT_SEED, "--seed", help="Random seed; the same seed writes byte-identical files."
    ),
    dirty: bool = typer.Option(
        False,
        "--dirty",
        help="Write a small sample with planted "
        "defects listed in defects.json and its README (for importer "
        "tests).",
    ),
) -> None:
    """Write the sample; the bar starts once OUT_DIR is accepted (errors print alone)."""
    bar = Progress(
        TextColumn("[bold]{task.description:<26}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("starting", total=len(STEPS))

    def report(name: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, description=name)

    try:
        counts = generate(out_dir, scale.value, seed, dirty, progress=report)
        bar.update(task, completed=len(STEPS), description="done")
    finally:
        if bar.live.is_started:
            bar.stop()
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    table = Table(title=f"{out_dir} (scale {manifest['scale']}, seed {seed})")
    table.add_column("file")
    table.add_column("rows / features")
    table.add_column("size", justify="right")
    total = 0
    for rel, info in manifest["files"].items():
        total += info["bytes"]
        table.add_row(rel, _count(info.get("count")), _size(info["bytes"]))
    table.add_row("[bold]total", "", f"[bold]{_size(total)}")
    console.print(table)
    console.print(
        f"buildings {counts['buildings']}, pipeline points "
        f"{counts['pipeline_points']}, lines {counts['pipeline_lines']}, components "
        f"{counts['components']}, incidents {counts['incidents']}"
    )


@app.command("load")
def load_cmd(
    folder: Path = typer.Argument(..., help="a folder written by `cimtwin samples generate`"),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="load again even if unchanged, or over a sample of the same name from another folder",
    ),
) -> None:
    """Import every layer of a sample folder into CIMTWIN_DATABASE_URL (grids first)."""
    import time

    from cimtwin.db.connect import require_set_up
    from cimtwin.samples.loader import load_sample

    require_set_up()

    console = Console(stderr=True)
    table = Table(title=f"loaded {folder}")
    for col in ("layer", "status", "rows", "warnings", "seconds"):
        table.add_column(col)
    t0 = time.perf_counter()

    def step(kind: str, result) -> None:
        nonlocal t0
        rows = sum(v for k, v in result.counts.items() if not k.endswith("_outside_grids"))
        table.add_row(
            kind,
            result.status,
            f"{rows:,}" if rows else "-",
            str(len(result.report.warnings)),
            f"{time.perf_counter() - t0:.1f}",
        )
        t0 = time.perf_counter()

    with console.status("importing the sample ..."):
        load_sample(folder, replace=replace, on_step=step)
    console.print(table)
