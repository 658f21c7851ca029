"""Load a generated sample district into the twin, in dependency order (grids first, so that
everything else gets its work grid at import time)."""

from __future__ import annotations

import json
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
    # after buildings (the model links to the building its footprint overlaps) and the DEM
    ("ifc", ("bim/*.ifc",), None),
)
#: steps a sample folder may lack (the defect sample has no DEM and no BIM model)
OPTIONAL_KINDS = frozenset({"dem", "ifc"})


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
    city = _city_districts(folder)
    if city is not None:  # a simulated city: each district folder in turn, as written
        results = []
        for sub in city:
            results += load_sample(sub, database_url, replace, on_step)
        return results
    results = []
    for kind, files, crs in SAMPLE_STEPS:
        for paths, dataset in _imports(folder, kind, files):
            if kind in OPTIONAL_KINDS and not all(p.exists() for p in paths):
                continue
            options = ImportOptions(
                crs=crs,
                replace=replace,
                imported_by="cimtwin samples load",
                dataset=dataset,
            )
            result = run_import(importer_for(kind), paths, options, database_url)
            results.append(result)
            if on_step:
                on_step(kind, result)
    return results


def _city_districts(folder: Path) -> list[Path] | None:
    """The district folders a city manifest lists (None for a one-district sample)."""
    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}/manifest.json is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("scale") != "city":
        return None
    subs = []
    for d in doc.get("districts") or []:
        name = d.get("folder") if isinstance(d, dict) else None
        plain = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
        sub = folder / str(name) if plain else None
        if sub is None or not (sub / "manifest.json").is_file():
            raise UserError(f"{folder}: city manifest lists district {name!r} with no folder")
        subs.append(sub)
    if not subs:
        raise UserError(f"{folder}: city manifest lists no districts")
    return subs


def _imports(folder: Path, kind: str, files: tuple[str, ...]) -> list[tuple[list[Path], str]]:
    """The imports of one step: its files together, or, for a pattern (``bim/*.ifc``), one
    import per matching file (IFC is one model per import; a second model gets its own
    dataset ``sample:FOLDER:ifc:STEM``)."""
    dataset = f"sample:{folder.name}:{kind}"
    if not any("*" in f for f in files):
        return [([folder / f for f in files], dataset)]
    found = sorted(p for f in files for p in folder.glob(f))
    return [([p], dataset if k == 0 else f"{dataset}:{p.stem}") for k, p in enumerate(found)]
