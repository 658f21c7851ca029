"""Load a generated sample district into the twin, in dependency order (grids first, so that
everything else gets its work grid at import time)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cimtwin.errors import UserError
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportOptions, ImportResult, run_import

SAMPLE_CRS = "EPSG:4547"

#: (kind, files relative to the sample folder, CRS override)
SAMPLE_STEPS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("grids", ("gpkg/admin.gpkg",), None),
    ("parcels", ("gpkg/parcels.gpkg",), None),
    ("buildings", ("gpkg/buildings.gpkg",), None),
    ("components", ("gpkg/components.gpkg",), None),
    ("pipelines", ("pipelines/points.csv", "pipelines/lines.csv"), SAMPLE_CRS),
    ("incidents", ("incidents.geojson",), None),
    ("dem", ("dem.tif",), None),
)
#: steps a sample folder may lack (the defect sample has no DEM)
OPTIONAL_KINDS = frozenset({"dem"})


def load_sample(
    folder: Path,
    database_url: str | None = None,
    replace: bool = False,
    on_step: Callable[[str, ImportResult], None] | None = None,
) -> list[ImportResult]:
    """Import every layer of a sample folder; each layer is its own all-or-nothing dataset,
    ``sample:FOLDER-NAME:KIND``. A sample folder of the same name elsewhere holds other files,
    so it replaces those datasets only with ``replace``."""
    if not (folder / "manifest.json").exists():
        raise UserError(
            f"{folder}: not a sample folder (no manifest.json); "
            "run `cimtwin samples generate` first"
        )
    results = []
    for kind, files, crs in SAMPLE_STEPS:
        paths = [folder / f for f in files]
        if kind in OPTIONAL_KINDS and not all(p.exists() for p in paths):
            continue
        options = ImportOptions(
            crs=crs,
            replace=replace,
            imported_by="cimtwin samples load",
            dataset=f"sample:{folder.name}:{kind}",
        )
        result = run_import(importer_for(kind), paths, options, database_url)
        results.append(result)
        if on_step:
            on_step(kind, result)
    return results
