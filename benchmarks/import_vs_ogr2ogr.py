"""cimtwin import vs ogr2ogr (GDAL, PG_USE_COPY=YES) on the district-scale sample.

Both load the same files into the same scratch database, one after the other, in one run.
cimtwin validates, transforms, assigns work grids and builds 3D pipe topology while it loads;
ogr2ogr copies the rows as they are. Prints features/s for each and the ratio.

    .venv/bin/python benchmarks/import_vs_ogr2ogr.py [--data DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyogrio
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import sqlalchemy_url  # noqa: E402

#: this checkout's CLI: ``.venv/bin/cimtwin`` is the entry point of whichever checkout installed
#: the shared venv, so in a worktree it would measure another checkout's code
CIMTWIN = [sys.executable, "-m", "cimtwin.cli"]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of this one command (``wait4``'s usage of that child,
    not the largest child so far)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        # cwd: ``python -m`` puts it first on sys.path, so it names the checkout measured
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            sys.exit(f"failed: {' '.join(cmd)}\n{out.read()[-4000:].decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "district")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    if shutil.which("ogr2ogr") is None:
        sys.exit("ogr2ogr not found: run scripts/setup.sh (installs gdal-bin)")
    if not (args.data / "manifest.json").exists():
        print(f"generating the district sample into {args.data} ...", flush=True)
        subprocess.run(
            [*CIMTWIN, "samples", "generate", str(args.data), "--scale", "district"],
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
    url = sqlalchemy_url().set(database=f"cimtwin_bench_{os.getpid()}")
    url_s = url.render_as_string(hide_password=False)
    bootstrap.recreate_database(url_s)
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": url_s, "PG_USE_COPY": "YES", "PYTHONPATH": path}
    u = make_url(url_s)
    pg = f"PG:host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    d = args.data
    print("loading work grids first (cimtwin assigns every component to one) ...", flush=True)
    run([*CIMTWIN, "import", "grids", str(d / "gpkg/admin.gpkg")], env)

    comp = d / "gpkg/components.gpkg"
    n_comp = pyogrio.read_info(comp)["features"]
    points, lines = d / "pipelines/points.csv", d / "pipelines/lines.csv"
    n_pts = sum(1 for _ in points.open(encoding="utf-8")) - 1
    n_lines = sum(1 for _ in lines.open(encoding="utf-8")) - 1

    cases = [
        (
            "components",
            n_comp,
            [*CIMTWIN, "import", "components", str(comp)],
            [
                [
                    "ogr2ogr",
                    "-f",
                    "PostgreSQL",
                    pg,
                    str(comp),
                    "-nln",
                    "public.ogr_components",
                    "-overwrite",
                    "-lco",
                    "GEOMETRY_NAME=geom",
                ]
            ],
        ),
        (
            "pipelines",
            n_pts + n_lines,
            [*CIMTWIN, "import", "pipelines", str(points), str(lines), "--crs", "EPSG:4547"],
            [
                [
                    "ogr2ogr",
                    "-f",
                    "PostgreSQL",
                    pg,
                    str(points),
                    "-nln",
                    "public.ogr_points",
                    "-overwrite",
                    "-oo",
                    "X_POSSIBLE_NAMES=Y",
                    "-oo",
                    "Y_POSSIBLE_NAMES=X",
                    "-oo",
                    "KEEP_GEOM_COLUMNS=NO",
                    "-a_srs",
                    "EPSG:4547",
                    "-lco",
                    "GEOMETRY_NAME=geom",
                ],
                [
                    "ogr2ogr",
                    "-f",
                    "PostgreSQL",
                    pg,
                    str(lines),
                    "-nln",
                    "public.ogr_lines",
                    "-overwrite",
                ],
            ],
        ),
    ]
    rows = []
    for name, n, ours, theirs in cases:
        t_ogr = sum(run(cmd, env)[0] for cmd in theirs)
        t_cim, rss = run(ours, env)
        rows.append((name, n, t_cim, t_ogr, rss))
    print()
    print(
        f"{'dataset':<12}{'features':>10}{'cimtwin s':>11}{'cimtwin f/s':>13}"
        f"{'ogr2ogr s':>11}{'ogr2ogr f/s':>13}{'ratio':>7}{'peak MiB':>10}"
    )
    for name, n, t_cim, t_ogr, rss in rows:
        print(
            f"{name:<12}{n:>10,}{t_cim:>11.1f}{n / t_cim:>13,.0f}{t_ogr:>11.1f}"
            f"{n / t_ogr:>13,.0f}{t_ogr / t_cim:>7.2f}{rss:>10,.0f}"
        )
    print("ratio = cimtwin features/s over ogr2ogr features/s (>= 1.0: cimtwin as fast or faster)")
    if not args.keep:
        bootstrap.drop_database(url_s)


if __name__ == "__main__":
    main()
