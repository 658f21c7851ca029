"""Generate a complete synthetic sample folder: layout, networks, GIS layers, README, manifest.

The order of steps is fixed and every random draw comes from a named sub-stream of the seed,
so the same (scale, seed, dirty) always writes byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd

from cimtwin.errors import UserError
from cimtwin.samples import dirty as dirty_mod
from cimtwin.samples import readme
from cimtwin.samples.admin import build_admin
from cimtwin.samples.bim import choose_building, write_model
from cimtwin.samples.components import DEPARTMENTS, build_components
from cimtwin.samples.dem import write_dem
from cimtwin.samples.incidents import build_incidents
from cimtwin.samples.landuse import build_landuse
from cimtwin.samples.layout import Terrain, build_lattice
from cimtwin.samples.network import LINE_COLUMNS, POINT_COLUMNS
from cimtwin.samples.pipelines import build_pipelines
from cimtwin.samples.spec import (
    DEFAULT_SEED,
    LONGHUA,
    PUBLIC_SCALES,
    SCALES,
    STORAGE_EPSG,
    VERTICAL_DATUM,
    County,
)
from cimtwin.samples.underground import build_underground
from cimtwin.samples.writers import (
    sha256,
    write_csv,
    write_geojson,
    write_gpkg,
    write_json,
    write_shp,
    write_xlsx,
)

STEPS = (
    "layout and land use",
    "pipelines",
    "components and incidents",
    "pipeline tables",
    "pipeline workbook",
    "GeoPackages",
    "Shapefiles",
    "README and manifest",
)
POINT_FORMATS = {5: "%.3f", 6: "%.3f", 7: "%.2f", 8: "%.2f"}
LINE_FORMATS = {4: "%.2f", 5: "%.2f"}
SUBDIRS = ("pipelines", "gpkg", "shp", "bim")

Progress = Callable[[str, int, int], None]


def _prepare(out_dir: Path) -> None:
    """Create OUT_DIR, or clear the files an earlier run listed in its manifest.

    A non-empty folder without our manifest is refused rather than mixed with foreign files.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".cimtwin-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to OUT_DIR {out_dir}: {exc.strerror or exc}") from exc
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    manifest = out_dir / "manifest.json"
    if not manifest.is_file():
        raise UserError(
            f"OUT_DIR {out_dir} is not empty and holds no manifest.json of an "
            "earlier sample; choose an empty or new folder"
        )
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
        listed = sorted(old["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{manifest} is not a sample manifest; choose an empty folder") from exc
    root = out_dir.resolve()
    for rel in listed:
        p = (out_dir / rel).resolve()
        if root in p.parents and p.is_file():
            p.unlink()
    manifest.unlink()
    for sub in SUBDIRS:
        d = out_dir / sub
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def generate(
    out_dir: Path,
    scale: str = "sample",
    seed: int = DEFAULT_SEED,
    dirty: bool = False,
    progress: Progress | None = None,
    *,
    county: County = LONGHUA,
    centre: tuple[float, float] | None = None,
    city: dict | None = None,
) -> dict:
    """Write the sample for ``scale`` into ``out_dir``; returns the counts per object kind.

    ``dirty`` writes the small defect sample (a cut-down layout) instead, with defects.json.
    ``county``, ``centre`` and ``city`` (what the README and manifest say about the city the
    folder belongs to) make it one district of ``cimtwin samples generate --scale city``.
    """
    if scale not in PUBLIC_SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(PUBLIC_SCALES)}")
    if dirty and scale != "sample":
        raise UserError("--dirty writes a small fixed-size sample; use it with --scale sample")
    out_dir = Path(out_dir)
    _prepare(out_dir)
    spec = SCALES["mini" if dirty else scale]

    def step(k: int) -> None:
        if progress is not None:
            progress(STEPS[k], k, len(STEPS))

    step(0)
    lat = build_lattice(spec, seed, county, centre)
    terrain = Terrain(seed, lat.cx, lat.cy)
    admin = build_admin(lat, seed)
    land = build_landuse(lat, terrain, seed)
    under = build_underground(lat, terrain)
    step(1)
    pipes = build_pipelines(lat, terrain, seed)
    step(2)
    comps = build_components(lat, terrain, pipes, land, seed)
    incidents = build_incidents(lat, terrain, pipes, land, comps, seed, spec.n_incidents)
    point_rows, line_rows = pipes.point_rows(), pipes.line_rows()
    parcel = land.parcel
    defects: list[dict] = []
    if dirty:
        comps, parcel, defects = dirty_mod.plant(
            point_rows, line_rows, comps, parcel, land.building, seed
        )
    for sub in SUBDIRS[:-1]:  # bim/ only when there is a model
        (out_dir / sub).mkdir(exist_ok=True)

    step(3)
    pdir = out_dir / "pipelines"
    write_csv(pdir / "points.csv", POINT_COLUMNS, point_rows, POINT_FORMATS)
    write_csv(pdir / "lines.csv", LINE_COLUMNS, line_rows, LINE_FORMATS)
    write_csv(pdir / "points_gbk.csv", POINT_COLUMNS, point_rows, POINT_FORMATS, "gbk")
    write_csv(pdir / "lines_gbk.csv", LINE_COLUMNS, line_rows, LINE_FORMATS, "gbk")
    step(4)
    write_xlsx(
        pdir / "pipelines.xlsx",
        [("管线点", POINT_COLUMNS, point_rows), ("管线段", LINE_COLUMNS, line_rows)],
    )
    step(5)
    gdir = out_dir / "gpkg"
    write_gpkg(
        gdir / "admin.gpkg",
        [
            ("street", admin.street),
            ("community", admin.community),
            ("work_grid", admin.work_grid),
            ("district", admin.district),
        ],
    )
    write_gpkg(gdir / "parcels.gpkg", [("parcel", parcel)])
    write_gpkg(
        gdir / "buildings.gpkg", [("building", land.building), ("underground_structure", under)]
    )
    write_gpkg(gdir / "components.gpkg", [("component", comps)])
    step(6)
    sdir = out_dir / "shp"
    kinds = comps.geom_type
    comp_parts = {
        "component": comps[kinds == "Point"],
        "component_line": comps[kinds == "LineString"],
        "component_poly": comps[kinds == "MultiPolygon"],
    }
    write_shp(sdir / "work_grid.shp", admin.work_grid)
    write_shp(sdir / "parcel.shp", parcel)
    write_shp(sdir / "building.shp", land.building)
    for name, part in comp_parts.items():
        write_shp(sdir / f"{name}.shp", part.reset_index(drop=True))
    if dirty:
        nocrs = comp_parts["component"].reset_index(drop=True).set_crs(None, allow_override=True)
        write_shp(sdir / "component_nocrs.shp", nocrs)
    step(7)
    write_geojson(out_dir / "incidents.geojson", incidents)
    write_csv(out_dir / "departments.csv", ("code", "name"), list(DEPARTMENTS.items()), {})
    if dirty:
        write_json(out_dir / "defects.json", {"defects": defects})
    else:  # the defect sample is about vector defects; it has no DEM
        dem_cells = write_dem(out_dir / "dem.tif", terrain, lat)
    # one BIM model, for the building nearest the station that suits one (none when dirty)
    choice = None if dirty else choose_building(land.building, (lat.cx, lat.cy))
    bim_counts: dict[str, int] = {}
    bim_doc: tuple[str, str, int] | None = None
    if choice is not None:
        bim_counts = write_model(out_dir / "bim" / f"{choice.code}.ifc", choice)

    counts = {
        "streets": len(admin.street),
        "communities": len(admin.community),
        "work_grids": len(admin.work_grid),
        "districts": len(admin.district),
        "parcels": len(parcel),
        "buildings": len(land.building),
        "underground_structures": len(under),
        "pipeline_points": len(point_rows),
        "pipeline_lines": len(line_rows),
        "components": len(comps),
        "incidents": len(incidents),
    }
    counts.update(pipes.counts())
    if dirty:
        counts["defects"] = len(defects)
    file_counts = _file_counts(
        point_rows,
        line_rows,
        admin,
        parcel,
        land.building,
        under,
        comps,
        comp_parts,
        incidents,
        dirty,
        defects,
    )
    if not dirty:
        file_counts["dem.tif"] = dem_cells
    if choice is not None:
        counts["bim_models"] = 1
        counts["bim_spaces"] = bim_counts.get("IfcSpace", 0)
        file_counts[f"bim/{choice.code}.ifc"] = bim_counts
        bim_doc = (
            choice.code,
            choice.name,
            sum(bim_counts.values()) - bim_counts["IfcBuildingStorey"],
        )
    command = f"cimtwin samples generate OUT_DIR --scale {scale} --seed {seed}" + (
        " --dirty" if dirty else ""
    )
    if city is not None:
        command = city["command"]
    meta = {
        "scale": spec.name if dirty else scale,
        "seed": seed,
        "dirty": dirty,
        "command": command,
        "counts": counts,
        "defects": defects,
        "pipeline_km": pipes.length_km(),
        "files_doc": _files_doc(file_counts, dirty, bim_doc),
        "component_classes": _class_counts(comps),
        "bim": None if choice is None else {**asdict(choice), "origin": list(choice.origin)},
        "city": city,
    }
    (out_dir / "README.md").write_text(readme.render(meta), encoding="utf-8", newline="\n")
    files = {}
    for p in sorted(q for q in out_dir.rglob("*") if q.is_file() and q.name != "manifest.json"):
        rel = p.relative_to(out_dir).as_posix()
        files[rel] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
        if rel in file_counts:
            files[rel]["count"] = file_counts[rel]
    doc = {
        "generator": "cimtwin samples generate",
        "scale": meta["scale"],
        "seed": seed,
        "dirty": dirty,
        "crs": f"EPSG:{STORAGE_EPSG}",
        "vertical_datum": VERTICAL_DATUM,
        "synthetic": True,
        "counts": counts,
        "pipeline_km": meta["pipeline_km"],
        "files": files,
    }
    if city is not None:
        doc["county"] = {"code": county.code, "name": county.name}
        doc["city"] = city
    write_json(out_dir / "manifest.json", doc)
    return counts


def _file_counts(
    point_rows: list,
    line_rows: list,
    admin,
    parcel: gpd.GeoDataFrame,
    building: gpd.GeoDataFrame,
    under: gpd.GeoDataFrame,
    comps: gpd.GeoDataFrame,
    comp_parts: dict,
    incidents: list,
    dirty: bool,
    defects: list,
) -> dict:
    """Rows or features per file (and per layer for GeoPackages and workbooks)."""
    out: dict = {
        "pipelines/points.csv": len(point_rows),
        "pipelines/points_gbk.csv": len(point_rows),
        "pipelines/lines.csv": len(line_rows),
        "pipelines/lines_gbk.csv": len(line_rows),
        "pipelines/pipelines.xlsx": {"管线点": len(point_rows), "管线段": len(line_rows)},
        "gpkg/admin.gpkg": {
            "street": len(admin.street),
            "community": len(admin.community),
            "work_grid": len(admin.work_grid),
            "district": len(admin.district),
        },
        "gpkg/parcels.gpkg": {"parcel": len(parcel)},
        "gpkg/buildings.gpkg": {"building": len(building), "underground_structure": len(under)},
        "gpkg/components.gpkg": {"component": len(comps)},
        "shp/work_grid.shp": len(admin.work_grid),
        "shp/parcel.shp": len(parcel),
        "shp/building.shp": len(building),
        "incidents.geojson": len(incidents),
        "departments.csv": len(DEPARTMENTS),
    }
    for name, part in comp_parts.items():
        out[f"shp/{name}.shp"] = len(part)
    if dirty:
        out["shp/component_nocrs.shp"] = len(comp_parts["component"])
        out["defects.json"] = len(defects)
    return out


def _files_doc(
    fc: dict, dirty: bool, bim: tuple[str, str, int] | None = None
) -> list[tuple[str, str, str]]:
    def n(key: str) -> str:
        v = fc[key]
        return ", ".join(f"{k} {c}" for k, c in v.items()) if isinstance(v, dict) else str(v)

    rows = [
        ("pipelines/points.csv", "CJJ 61 point table (物探点), UTF-8", n("pipelines/points.csv")),
        ("pipelines/lines.csv", "CJJ 61 line table (管段), UTF-8", n("pipelines/lines.csv")),
        ("pipelines/points_gbk.csv", "same rows as points.csv, GBK", n("pipelines/points.csv")),
        ("pipelines/lines_gbk.csv", "same rows as lines.csv, GBK", n("pipelines/lines.csv")),
        (
            "pipelines/pipelines.xlsx",
            "same rows, sheets 管线点 / 管线段",
            n("pipelines/pipelines.xlsx"),
        ),
        (
            "gpkg/admin.gpkg",
            "street (街道), community (社区), work_grid (单元网格), district",
            n("gpkg/admin.gpkg"),
        ),
        ("gpkg/parcels.gpkg", "parcel (地块)", n("gpkg/parcels.gpkg")),
        ("gpkg/buildings.gpkg", "building, underground_structure", n("gpkg/buildings.gpkg")),
        (
            "gpkg/components.gpkg",
            "component (城市部件), points, lines and polygons",
            n("gpkg/components.gpkg"),
        ),
        ("shp/work_grid.shp", "work grids", n("shp/work_grid.shp")),
        ("shp/parcel.shp", "parcels", n("shp/parcel.shp")),
        ("shp/building.shp", "buildings", n("shp/building.shp")),
        ("shp/component.shp", "point components", n("shp/component.shp")),
        ("shp/component_line.shp", "line components (交通护栏)", n("shp/component_line.shp")),
        ("shp/component_poly.shp", "polygon components (绿地)", n("shp/component_poly.shp")),
        ("incidents.geojson", "incidents (事件), RFC 7946", n("incidents.geojson")),
        ("departments.csv", "department codes used by components", n("departments.csv")),
    ]
    if "dem.tif" in fc:
        rows.append(
            (
                "dem.tif",
                "ground elevation (DEM), 5 m cells, float32 GeoTIFF, 1985 heights",
                f"{fc['dem.tif']} cells",
            )
        )
    if bim is not None:
        code, name, n_elements = bim
        spaces = fc[f"bim/{code}.ifc"].get("IfcSpace", 0)
        rows.append(
            (
                f"bim/{code}.ifc",
                f"IFC4 BIM model of {name} ({code}), georeferenced by IfcMapConversion",
                f"{n_elements} elements, {spaces} rooms",
            )
        )
    if dirty:
        rows += [
            (
                "shp/component_nocrs.shp",
                "point components without .prj (defect)",
                n("shp/component_nocrs.shp"),
            ),
            ("defects.json", "planted defects, machine-readable", n("defects.json")),
        ]
    rows.append(("manifest.json", "counts and sha256 of every file", "-"))
    return rows


def _class_counts(comps: gpd.GeoDataFrame) -> list[tuple[str, str, int]]:
    from cimtwin.reference import component_classes

    classes = component_classes()
    vc = comps["class_cd"].value_counts()
    return [
        (c, classes[c].name if c in classes else "(unknown)", int(vc[c])) for c in sorted(vc.index)
    ]
