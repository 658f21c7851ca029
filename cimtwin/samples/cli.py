"""``cimtwin samples``: write the synthetic North Station district in survey delivery formats."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cimtwin.errors import UserError
from cimtwin.samples.city import MAX_DISTRICTS, generate_city
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
    city = "city"


class DistrictScale(StrEnum):
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
    "manifest.json. EPSG:4547, 1985 heights; the same seed gives byte-identical files. "
    "--scale city --districts N writes N such districts side by side, one folder each under "
    "its own Shenzhen county code, for the city-scale benchmarks."
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
        "12 km district at real scale for benchmarks (never commit); city: --districts "
        "districts of --district-scale side by side.",
    ),
    districts: int | None = typer.Option(
        None,
        "--districts",
        min=1,
        max=MAX_DISTRICTS,
        help=f"With --scale city: how many districts (1..{MAX_DISTRICTS}, default 2), each "
        "under its own county code in the order 440303 罗湖, 440304 福田, 440305 南山, 440306 "
        "宝安, 440307 龙岗, 440308 盐田, 440309 龙华, 440310 坪山, 440311 光明, 440343 大鹏; "
        "district k uses seed SEED+k and lies east (5 per row, then north) of district k-1.",
    ),
    district_scale: DistrictScale | None = typer.Option(
        None,
        "--district-scale",
        help="With --scale city: the size of each district (district, the default: the 12 km "
        "benchmark district; sample: the small station sample, for tests).",
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
    if scale is not Scale.city and (districts is not None or district_scale is not None):
        raise UserError("--districts and --district-scale go with --scale city")
    if scale is Scale.city and dirty:
        raise UserError("--dirty writes one small sample; it does not go with --scale city")
    bar = Progress(
        TextColumn("[bold]{task.description:<26}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    n_steps = len(STEPS) * ((districts or 2) if scale is Scale.city else 1)
    task = bar.add_task("starting", total=n_steps)

    def report(name: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total, description=name)

    try:
        if scale is Scale.city:
            counts = generate_city(
                out_dir,
                districts or 2,
                (district_scale or DistrictScale.district).value,
                seed,
                progress=report,
            )
        else:
            counts = generate(out_dir, scale.value, seed, dirty, progress=report)
        bar.update(task, completed=n_steps, description="done")
    finally:
        if bar.live.is_started:
            bar.stop()
    if scale is Scale.city:
        _print_city(out_dir, seed)
        return
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


def _print_city(out_dir: Path, seed: int) -> None:
    """One row per district of a city folder: its code, place and what it holds."""
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    table = Table(
        title=f"{out_dir} (city of {len(manifest['districts'])} districts of scale "
        f"{manifest['district_scale']}, seed {seed})"
    )
    for col in ("folder", "county", "extent (EPSG:4547)", "buildings", "components", "pipes"):
        table.add_column(col)
    for d in manifest["districts"]:
        c = d["counts"]
        x0, y0, x1, y1 = d["extent"]
        table.add_row(
            d["folder"],
            f"{d['county']} {d['name']}",
            f"{x0:.0f} {y0:.0f} - {x1:.0f} {y1:.0f}",
            str(c["buildings"]),
            str(c["components"]),
            str(c["pipeline_lines"]),
        )
    console.print(table)
    total = sum(info["bytes"] for info in manifest["files"].values())
    console.print(
        f"{len(manifest['files'])} files, {_size(total)}; "
        f"load with `cimtwin samples load {out_dir}`"
    )


@app.command("load")
def load_cmd(
    folder: Path = typer.Argument(
        ...,
        help="a folder written by `cimtwin samples generate` (a city folder: every district)",
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="load again even if unchanged, or over a sample of the same name from another folder",
    ),
) -> None:
    """Import every layer of a sample folder into CIMTWIN_DATABASE_URL (grids first); a city
    folder imports its districts one after the other, each as its own datasets."""
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
