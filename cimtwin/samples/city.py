"""A simulated city: N districts of the sample layout side by side, each under its own county.

District ``k`` is an ordinary sample folder (``CODE_SLUG/``, loadable alone) generated with
seed ``seed + k`` under the k-th Shenzhen county code (:data:`~cimtwin.samples.spec.SHENZHEN`),
so component ids, grid, parcel and building codes, incident ids and dataset names never
clash between districts.  Districts sit on a grid of :data:`COLUMNS` columns (west to east,
then rows to the north) spaced by the largest extent any seed can give plus :data:`GAP`: they
never overlap.  District ``k`` depends only on (seed, k, district scale), so the first
districts of a larger city are byte-identical to a smaller one's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cimtwin.errors import UserError
from cimtwin.samples.generator import STEPS, SUBDIRS, _prepare, generate
from cimtwin.samples.layout import max_extent, station_xy
from cimtwin.samples.spec import (
    DEFAULT_SEED,
    PUBLIC_SCALES,
    SCALES,
    SHENZHEN,
    STORAGE_EPSG,
    County,
)
from cimtwin.samples.writers import sha256, write_json

#: districts per row of the city (Shenzhen is long west-east)
COLUMNS = 5
#: least open land (m) between the admin boundaries of two neighbouring districts
GAP = 200.0
MAX_DISTRICTS = len(SHENZHEN)

Progress = Callable[[str, int, int], None]


def folder_name(county: County) -> str:
    """District sub-folder, also the middle of its dataset names (``sample:FOLDER:KIND``)."""
    return f"{county.code}_{county.slug}"


def district_centre(k: int, district_scale: str) -> tuple[float, float]:
    """Lattice centre of district ``k``: the North Station for district 0, then one pitch east
    per column and north per row."""
    w, h = max_extent(SCALES[district_scale])
    x0, y0 = station_xy()
    col, row = k % COLUMNS, k // COLUMNS
    return round(x0 + col * (w + GAP), 3), round(y0 + row * (h + GAP), 3)


def _clear(out_dir: Path) -> None:
    """Like the sample's clean-up, then the district folders an earlier city left empty."""
    old: list[str] = []
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        try:
            old = [d["folder"] for d in json.loads(manifest.read_text("utf-8"))["districts"]]
        except (ValueError, KeyError, TypeError):
            old = []  # a single-district manifest: _prepare handles it
    _prepare(out_dir)
    root = out_dir.resolve()
    for name in old:
        d = (out_dir / name).resolve()
        if root not in d.parents or not d.is_dir():
            continue
        for sub in SUBDIRS:
            if (d / sub).is_dir() and not any((d / sub).iterdir()):
                (d / sub).rmdir()
        if not any(d.iterdir()):
            d.rmdir()


def generate_city(
    out_dir: Path,
    districts: int,
    district_scale: str = "district",
    seed: int = DEFAULT_SEED,
    progress: Progress | None = None,
) -> dict:
    """Write ``districts`` district folders and a city manifest.json listing them; returns the
    counts summed over the districts (plus ``districts``)."""
    if not 1 <= districts <= MAX_DISTRICTS:
        raise UserError(
            f"--districts must be 1..{MAX_DISTRICTS} (one per Shenzhen district code), "
            f"not {districts}"
        )
    if district_scale not in PUBLIC_SCALES:
        raise UserError(
            f"unknown district scale {district_scale!r}; choose one of {', '.join(PUBLIC_SCALES)}"
        )
    out_dir = Path(out_dir)
    _clear(out_dir)
    command = (
        f"cimtwin samples generate OUT_DIR --scale city --districts {districts} "
        f"--district-scale {district_scale} --seed {seed}"
    )
    total = districts * len(STEPS)
    listed, counts = [], {"districts": districts}
    for k, county in enumerate(SHENZHEN[:districts]):
        centre = district_centre(k, district_scale)
        city = {  # nothing about N: district k's files are the same in every city holding it
            "command": (
                f"cimtwin samples generate OUT_DIR --scale city --districts N "
                f"--district-scale {district_scale} --seed {seed}"
            ),
            "index": k,
            "district_seed": seed + k,
            "centre": list(centre),
            "county": county.code,
            "county_name": county.name,
            "abbr": county.abbr,
        }

        def step(name: str, done: int, _total: int, k: int = k, code: str = county.code) -> None:
            if progress is not None:
                progress(f"{code} {name}", k * len(STEPS) + done, total)

        folder = out_dir / folder_name(county)
        got = generate(
            folder, district_scale, seed + k, progress=step, county=county, centre=centre, city=city
        )
        for key, v in got.items():
            counts[key] = counts.get(key, 0) + v
        doc = json.loads((folder / "manifest.json").read_text("utf-8"))
        listed.append(
            {
                "folder": folder.name,
                "county": county.code,
                "name": county.name,
                "seed": seed + k,
                "centre": list(centre),
                "extent": _extent(folder),
                "counts": doc["counts"],
            }
        )
    files = {}
    for p in sorted(
        q for q in out_dir.rglob("*") if q.is_file() and q != out_dir / "manifest.json"
    ):
        files[p.relative_to(out_dir).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256(p)}
    write_json(
        out_dir / "manifest.json",
        {
            "generator": "cimtwin samples generate",
            "scale": "city",
            "district_scale": district_scale,
            "seed": seed,
            "command": command,
            "crs": f"EPSG:{STORAGE_EPSG}",
            "synthetic": True,
            "districts": listed,
            "counts": counts,
            "files": files,
        },
    )
    return counts


def _extent(folder: Path) -> list[float]:
    """The district's admin extent (x0, y0, x1, y1) from its streets, as written."""
    import pyogrio

    info = pyogrio.read_info(folder / "gpkg" / "admin.gpkg", layer="street")
    return [round(float(v), 3) for v in info["total_bounds"]]
