"""``cimtwin tiles``: static tile export."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from cimtwin.tiles.store import Store

STORAGE_OPTIONS_HELP = (
    "fsspec storage options of an --out URL, a JSON object (e.g. endpoint_url, key, secret "
    "for s3://); default: the filesystem's own environment (AWS_*, FSSPEC_S3_*)"
)

app = typer.Typer(
    help="Vector tiles (static export) and 3D Tiles (build-3d).", no_args_is_help=True
)


@app.command("export-mvt")
def export_mvt(
    layers: str = typer.Option(
        ..., "--layers", help="comma-separated layer ids, e.g. pipelines,components"
    ),
    minzoom: int = typer.Option(12, "--minzoom", min=0, max=22),
    maxzoom: int = typer.Option(16, "--maxzoom", min=0, max=22),
    out: str = typer.Option(
        ...,
        "--out",
        help="FILE.pmtiles (v3) or FILE.mbtiles: a local path or an fsspec URL (s3://b/f.pmtiles)",
    ),
    storage_options: str | None = typer.Option(
        None, "--storage-options", envvar="CIMTWIN_TILES_STORAGE_OPTIONS", help=STORAGE_OPTIONS_HELP
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Dask LocalCluster worker processes rendering the tiles (0: one per CPU; "
        "1: in this process); the archive is the same file either way",
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        envvar="CIMTWIN_DASK_SCHEDULER",
        help="an existing Dask scheduler (tcp://host:8786) to render on instead; its "
        "workers must reach the database",
    ),
    memory_limit: str = typer.Option(
        "auto", "--memory-limit", help="memory per LocalCluster worker (e.g. 2GiB)"
    ),
) -> None:
    """Write the layers' vector tiles over the data's extent to a PMTiles or MBTiles file."""
    from cimtwin.tiles import cluster
    from cimtwin.tiles.export import export
    from cimtwin.tiles.store import open_store, parse_options

    options = parse_options(storage_options)
    open_store(out, options).split()[0].check_writable()  # one line before any progress bar
    cluster.check_memory_limit(memory_limit)
    if scheduler:
        cluster.client_for(0, scheduler)  # unreachable: one line before any work

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
            workers=workers or os.cpu_count() or 1,
            scheduler=scheduler,
            memory_limit=memory_limit,
            storage_options=options,
        )
    console.print(
        f"{out}: {counts['tiles_written']:,} tiles written "
        f"({counts['tiles_visited']:,} visited), {counts['bytes']:,} bytes"
    )


def expand_families(
    wanted: list[str], database_url: str, folder: Path | str | Store
) -> dict[str, str]:
    """Tileset id -> target, a family (``bim``) standing for one tileset per member; the
    folders of members that are gone (a model deleted) are removed. Reimported names
    (``oblique``) are left out: :func:`build_3d` runs their import again. ``folder``: the
    output root, a local folder or a store (:mod:`cimtwin.tiles.store`)."""
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles.store import Store, open_store
    from cimtwin.tiles.threed import registry
    from cimtwin.tiles.threed.build import MANIFEST

    store = folder if isinstance(folder, Store) else open_store(folder)

    targets: dict[str, str] = {}
    for name in wanted:
        if name in registry.REIMPORTED:
            continue  # rebuilt by their import (build_3d), not by the builder
        if name not in registry.FAMILIES:
            targets[name] = registry.target_for(name)
            continue
        with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
            members = registry.family_members(name, conn)
        targets.update(members)
        current = {m[0] for m in members}
        for old in store.subfolders():
            gone = store.child(old)
            if old.startswith(f"{name}-") and old not in current and gone.read_bytes(MANIFEST):
                gone.remove_tree()
    return targets


@app.command("build-3d")
def build_3d(
    layers: str = typer.Option(
        "",
        "--layers",
        help="comma-separated 3D tilesets (terrain,buildings,underground,pipelines,"
        "pipeline_points,components; bim: one tileset per imported IFC model; oblique: "
        "each imported oblique production, re-imported from its source folder); "
        "default: every one whose source is installed",
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        help="output folder or fsspec URL (s3://bucket/3dtiles, file:///srv/3dtiles; default "
        "CIMTWIN_TILES_DIR); one folder per tileset",
    ),
    storage_options: str | None = typer.Option(
        None, "--storage-options", envvar="CIMTWIN_TILES_STORAGE_OPTIONS", help=STORAGE_OPTIONS_HELP
    ),
    bbox: str | None = typer.Option(
        None, "--bbox", help="x0,y0,x1,y1 in the storage CRS: rebuild only tiles meeting it"
    ),
    grid: str | None = typer.Option(
        None, "--grid", help="a work grid code: rebuild only tiles meeting its extent"
    ),
    changed: bool = typer.Option(
        False, "--changed", help="rebuild only tiles meeting data imported since the last build"
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Dask LocalCluster worker processes, one thread each (0: one per CPU; "
        "1: in this process)",
    ),
    jobs: int = typer.Option(0, "--jobs", min=0, hidden=True, help="old name of --workers"),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        envvar="CIMTWIN_DASK_SCHEDULER",
        help="an existing Dask scheduler (tcp://host:8786) to run the tile jobs on instead; "
        "its workers must reach the database and the output (a shared folder or a URL)",
    ),
    memory_limit: str = typer.Option(
        "auto",
        "--memory-limit",
        help="memory per LocalCluster worker (e.g. 2GiB; auto: the machine's shared out)",
    ),
) -> None:
    """Build OGC 3D Tiles 1.1 tilesets from the database into OUT/{id}/tileset.json."""
    from cimtwin.errors import UserError
    from cimtwin.settings import get_settings
    from cimtwin.tiles.store import open_store, parse_options
    from cimtwin.tiles.threed import registry
    from cimtwin.tiles.threed.build import build_tileset, grid_box, parse_bbox

    if bbox and grid:
        raise UserError("--bbox and --grid: give one of them")
    settings = get_settings()
    # a bad URL, an unknown protocol or bad options: one line before the database is asked
    store = open_store(out or settings.tiles_dir, parse_options(storage_options))
    area = parse_bbox(bbox) if bbox else None
    asked = [s.strip() for s in layers.split(",") if s.strip()]
    wanted = asked or [*registry.available(), *registry.REIMPORTED]
    if not wanted:
        raise UserError("no 3D tileset source is installed")
    for name in wanted:
        registry.target_for(name)  # an unknown name is refused before the database is asked
    from cimtwin.db.connect import require_set_up

    require_set_up(settings.database_url)
    if grid:
        area = grid_box(settings.database_url, grid)
    # tilesets an import writes (oblique) are rebuilt by that import, not by the builder
    reimported = [n for n in wanted if n in registry.REIMPORTED]
    targets = expand_families(wanted, settings.database_url, store)
    from cimtwin.tiles import cluster

    # a bad memory limit or an unreachable scheduler is told before any progress bar
    cluster.check_memory_limit(memory_limit)
    if scheduler:
        cluster.client_for(0, scheduler)
    if scheduler or (workers or jobs or os.cpu_count() or 1) > 1:
        store.require_shared("the workers of --workers/--scheduler")
    store.check_writable()
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        results = []
        for name, target in targets.items():
            task = progress.add_task(name, total=None)

            def planned(n: int, t: TaskID = task) -> None:
                progress.update(t, total=n)

            def done(t: TaskID = task) -> None:
                progress.advance(t)

            results.append(
                build_tileset(
                    name,
                    store,
                    database_url=settings.database_url,
                    target=target,
                    area=area,
                    changed=changed,
                    workers=workers or jobs or None,
                    scheduler=scheduler or None,
                    memory_limit=memory_limit,
                    on_plan=planned,
                    on_tile=done,
                )
            )
        for name in reimported:

            def bar(description: str, total: int, label: str = name) -> Callable[[int], None]:
                task = progress.add_task(label, total=total)
                return lambda n: progress.advance(task, n)

            results += registry.rebuilder(name)(
                settings.database_url,
                store,
                area=area,
                changed=changed,
                progress=bar,
                warn=lambda text: console.print(f"[yellow]{text}[/]"),
            )
    for r in results:
        if r.path is None:
            console.print(f"{r.tileset}: no data, nothing written")
        else:
            console.print(
                f"{r.path}: {r.built} tiles built, {r.kept} kept, {r.removed} removed; "
                f"{r.bytes:,} bytes, largest {r.largest:,}"
            )
