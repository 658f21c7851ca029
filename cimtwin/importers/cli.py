"""``cimtwin import KIND PATH...``: validate and load a surveyor's delivery."""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cimtwin.errors import UserError
from cimtwin.importers.registry import importer_for, kinds

console = Console(stderr=True)

#: the choices of KIND, from the importer registry
if TYPE_CHECKING:
    # mypy cannot see members made at run time; to it, KIND is a string enum
    class Kind(enum.StrEnum): ...
else:
    Kind = enum.StrEnum("Kind", {k: k for k in kinds()})


#: kinds whose input is a folder (an oblique photography production)
FOLDER_KINDS = frozenset({"oblique"})


def check_paths(paths: list[Path], folders: bool = False) -> None:
    """Each path is a file (or, with ``folders``, a folder): anything else is refused before
    anything is read."""
    for p in paths:
        if p.is_dir() and not folders:
            raise UserError(
                f"{p}: is a folder; give the files in it (e.g. {p}/*.gpkg, {p}/*.shp, {p}/*.csv)"
            )
        if not p.exists():
            raise UserError(f"{p}: no such file")


def import_command(
    kind: Kind = typer.Argument(..., help="what the files hold"),
    paths: list[Path] = typer.Argument(
        ...,
        help="files: GIS layers, CSV/XLSX tables, .inp, a GeoTIFF DEM, an IFC model; oblique: "
        "the production's folder",
    ),
    crs: str = typer.Option(
        None,
        "--crs",
        help="source CRS when the file has none, e.g. EPSG:4547 (overrides the file's)",
    ),
    network: str = typer.Option(
        None,
        "--network",
        help="CJJ 61 network code (JS, PS, RQ, "
        "DL, TX ...) for files that hold one network without a type "
        "column",
    ),
    mapping: Path = typer.Option(
        None, "--mapping", help="YAML file naming local columns", exists=True, dir_okay=False
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate only, write nothing"),
    strict: bool = typer.Option(False, "--strict", help="warnings fail the import too"),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="re-import even when the files are "
        "unchanged since the last import of the dataset, or replace "
        "a dataset last imported from other files",
    ),
    allow_empty: bool = typer.Option(
        False,
        "--allow-empty",
        help="accept files without rows (the dataset is emptied); refused by default",
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="dataset name (replace key); default KIND:/absolute/folder/file of the first file",
    ),
    local_transform: str = typer.Option(
        None,
        "--local-transform",
        help="4-parameter "
        "similarity from a local grid: dx,dy,rot_arcsec,"
        "scale_ppm (applied before --crs)",
    ),
    from_gcj02: bool = typer.Option(
        False,
        "--from-gcj02",
        help="incidents: positions are "
        "GCJ-02 longitude/latitude from a Chinese web map (Amap/"
        "高德 ...); convert them to WGS 84",
    ),
    building: str = typer.Option(
        None,
        "--building",
        help="ifc: the building code the model belongs to (default: the building its "
        "footprint overlaps most, else a new building made from the model)",
    ),
    origin: str = typer.Option(
        None,
        "--origin",
        help="ifc: LON,LAT,H where the model's local origin goes (degrees, 1985 height in "
        "metres), overriding the file's georeference; oblique: X,Y,Z the production's "
        "SRSOrigin in --crs (when it has no metadata.xml, or to override it)",
    ),
    rotation: float = typer.Option(
        None,
        "--rotation",
        help="ifc, with --origin: the model's +X axis turned DEG degrees counter-clockwise "
        "from east",
    ),
    height_datum: str = typer.Option(
        None,
        "--height-datum",
        help="ifc: what the file's heights are when it does not say; oblique: what the "
        "production's heights are (default 1985 for a projected SRS, ellipsoidal for ENU:): "
        "1985 (unchanged), geoid (above CIMTWIN_GEOID), ellipsoidal",
    ),
    report: Path = typer.Option(
        None, "--report", help="write the validation report here (.json or .csv)"
    ),
    by: str = typer.Option(None, "--by", help="who runs the import (recorded)"),
) -> None:
    """Validate files and load them into the twin in one transaction (all or nothing).

    Re-importing a dataset replaces its rows. Errors name the file, row or feature, and rule.
    """
    import getpass

    from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import
    from cimtwin.memory import fewer_collections, return_freed_memory

    return_freed_memory()
    check_paths(paths, folders=kind.value in FOLDER_KINDS)
    if not dry_run:  # refuse a database that cannot take the import before reading the files
        from cimtwin.db.connect import require_set_up

        require_set_up()
    options = ImportOptions(
        crs=crs,
        network=network,
        mapping=mapping,
        dry_run=dry_run,
        strict=strict,
        replace=replace,
        dataset=dataset,
        local_transform=local_transform,
        from_gcj02=from_gcj02,
        allow_empty=allow_empty,
        imported_by=by or getpass.getuser(),
        building=building,
        origin=origin,
        rotation=rotation,
        height_datum=height_datum,
    )
    importer = importer_for(kind.value)
    t0 = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(f"{kind.value}: reading and validating {len(paths)} file(s)")

        def step(description: str, total: int | None = None):
            task = progress.add_task(description, total=total)
            return lambda n=1: progress.advance(task, n)

        options.progress = step
        try:
            with fewer_collections():
                result = run_import(importer, paths, options)
        except ImportFailed as exc:
            if exc.report is not None:
                exc.report.print_summary(console)
                if report:
                    exc.report.write(report)
            raise
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    elapsed = time.perf_counter() - t0
    result.report.print_summary(console)
    if report:
        result.report.write(report)
        console.print(f"report written to {report}")
    n = result.prepared.feature_count if result.prepared else 0
    rate = n / elapsed if elapsed > 0 else 0
    if result.status == "unchanged":
        console.print(
            f"[yellow]{result.dataset}: unchanged since batch {result.batch_id}; "
            "nothing to do (--replace to load again)[/]"
        )
    elif result.status == "validated":
        console.print(f"[green]dry run: {n} features valid[/] ({elapsed:.1f} s)")
    else:
        counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
        console.print(
            f"[green]{result.dataset}: batch {result.batch_id} loaded[/] {counts} "
            f"in {elapsed:.1f} s ({rate:,.0f} features/s)"
        )
