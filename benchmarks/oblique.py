"""`cimtwin import oblique` on the sample ContextCapture production and a 36-tile copy of it.

One run on this machine:

1. a scratch database with a grid of building footprints over the sample's tile (so the
   import bakes building ids into the mesh, 单体化, as in production use);
2. the sample production (``../shared/data/oblique/production_cgcs2000_gk``: one tile folder
   of 9 OSGB files, 40 pyramid nodes) imported by the CLI: wall time, time per tile folder
   and per pyramid node, MB of OSGB read per second, peak RSS, output size, the 3D Tiles
   validator's verdict; tile folders are converted by CIMTWIN_OBLIQUE_WORKERS processes
   (default one per core; set it to 1 for the serial figures);
3. a larger production: the sample's tile folder copied to a 6 x 6 grid of folder names
   ``Tile_+00x_+0yy`` (each folder's root file renamed after it; the level files keep their
   names, which is how the PagedLOD nodes name their children, so nothing inside the binary
   OSGB is rewritten). The copies lie where the original lies (their vertices are not
   moved), which changes nothing for the work measured; the same figures;
4. ``cimtwin tiles build-3d --layers oblique`` rebuilding them all (the re-import path);
   the sample is also imported once before the footprints exist, the cost of 单体化 shown;
5. the peers: the PyPI ``osgb23dtiles`` package (fanvanzh/3dtiles' converter) is tried in
   its own venv (benchmarks/.peers/osgb23dtiles); its bundled library needs glibc 2.38 and
   GDAL's libgdal.so.34, and Debian 12 has glibc 2.36 and libgdal.so.32, so it does not load
   here (the script prints the loader's error). fanvanzh/3dtiles and scially's
   Cesium3DTilesConverter are C++/Rust sources with no Linux package to install; neither
   README publishes a throughput figure (fanvanzh's says only "the fastest ... in the world").

    .venv/bin/python benchmarks/oblique.py [--tiles 36] [--keep] [--skip-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402
from cimtwin.settings import get_settings  # noqa: E402
from cimtwin.spatial.model import SCHEMA  # noqa: E402

#: this checkout's CLI (``.venv/bin/cimtwin`` may be another checkout's in a worktree)
CLI = [sys.executable, "-m", "cimtwin.cli"]
_DATA = Path("shared") / "data" / "oblique" / "production_cgcs2000_gk"
_TOOL = Path("shared") / "tools" / "3d-tiles-validator" / "validate"
SAMPLE = next((p for p in (ROOT.parent / _DATA, ROOT.parent.parent / _DATA) if p.is_dir()), None)
VALIDATOR = next(
    (p for p in (ROOT.parent / _TOOL, ROOT.parent.parent / _TOOL) if p.is_file()), None
)
PEER = ROOT / "benchmarks" / ".peers" / "osgb23dtiles"
PEER_PACKAGE = "osgb23dtiles==0.1.0"


def _tree_rss_kib(pid: int) -> int:
    """The summed PSS of ``pid`` and its descendants now (a pool's workers run at once,
    so the largest single process understates the import's memory)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:  # PSS: pages a forked worker shares with its parent counted once, not twice
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MiB) of the command's largest process (``os.wait4``, osgconv
    children included), its output, and the peak of the process tree's summed PSS (MiB,
    sampled every 0.2 s)."""
    import tempfile
    import threading

    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        sampler.join()
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if code != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{text[-6000:]}")
    return wall, usage.ru_maxrss / 1024, text, peak[0] / 1024


def validates(tileset: Path) -> str:
    if VALIDATOR is None:
        return "validator absent"
    proc = subprocess.run([str(VALIDATOR), "-t", str(tileset)], capture_output=True, text=True)
    text = proc.stdout[proc.stdout.find("{") :]
    try:
        report = json.loads(text)
        errors, warnings = report.get("numErrors", "?"), report.get("numWarnings", "?")
    except ValueError:
        errors = warnings = "?"
    return f"{errors} errors, {warnings} warnings"


def size_mb(folder: Path, suffix: str | None = None) -> float:
    files = [p for p in folder.rglob("*") if p.is_file() and (suffix is None or p.suffix == suffix)]
    return sum(p.stat().st_size for p in files) / 1e6


def grid_production(sample: Path, out: Path, n: int) -> Path:
    """The sample's tile folder copied to ``n`` folders named on a square grid."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "Data").mkdir(parents=True)
    shutil.copyfile(sample / "metadata.xml", out / "metadata.xml")
    (src,) = [p for p in (sample / "Data").iterdir() if p.is_dir()]
    side = int(n**0.5 + 0.999)
    for k in range(n):
        name = f"Tile_+{k // side:03d}_+{k % side:03d}"
        folder = out / "Data" / name
        folder.mkdir()
        for f in src.iterdir():
            target = folder / (f"{name}.osgb" if f.name == f"{src.name}.osgb" else f.name)
            shutil.copyfile(f, target)
            target.chmod(0o644)
    return out


def footprints(url: str, per_side: int = 8) -> int:
    """A grid of square footprints over the sample's tile (its extent in the storage CRS,
    read from the sample as the importer places it): ``per_side``² buildings."""
    import numpy as np
    import psycopg
    import shapely

    from cimtwin.importers.oblique.georef import ToStorage, read_metadata
    from cimtwin.importers.oblique.osgb import read_osgb
    from cimtwin.importers.oblique.pyramid import production_roots
    from cimtwin.spatial.base import SRID

    assert SAMPLE is not None
    meta = read_metadata(SAMPLE / "metadata.xml")
    nodes = read_osgb(production_roots(SAMPLE)[0]).nodes
    xy = ToStorage(meta.srs, meta.origin, None)(
        np.concatenate([g.positions for n in nodes for g in n.geometries])
    )
    x0, y0 = xy[:, 0].min(), xy[:, 1].min()
    step = (xy[:, 0].max() - x0) / per_side
    with psycopg.connect(libpq_dsn(url)) as conn:
        for i in range(per_side):
            for j in range(per_side):
                box = shapely.box(
                    x0 + i * step + 1,
                    y0 + j * step + 1,
                    x0 + (i + 1) * step - 1,
                    y0 + (j + 1) * step - 1,
                )
                conn.execute(
                    f"INSERT INTO {SCHEMA}.building (id, building_code, name, use, height_m, "
                    "floors, underground_floors, county_code, footprint) VALUES "
                    "(%s, %s, %s, 'residential', 20, 6, 0, %s, ST_Multi(ST_GeomFromWKB(%s, %s)))",
                    (
                        9_000_000 + i * per_side + j,
                        f"BENCH-{i}-{j}",
                        f"楼 {i}-{j}",
                        get_settings().county_code,
                        shapely.to_wkb(box),
                        SRID,
                    ),
                )
    return per_side * per_side


def recorded(url: str, dataset: str) -> tuple[int, int]:
    """(rows, distinct buildings baked in) of a dataset's ``oblique_mesh_tile``."""
    import psycopg

    with psycopg.connect(libpq_dsn(url)) as conn:
        row = conn.execute(
            f"SELECT count(*), (SELECT count(DISTINCT b) FROM {SCHEMA}.oblique_mesh_tile t2, "
            f"unnest(t2.building_ids) AS b WHERE t2.dataset = %s) "
            f"FROM {SCHEMA}.oblique_mesh_tile WHERE dataset = %s",
            (dataset, dataset),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def peer() -> str:
    """Install the PyPI peer in its own venv and try to load its library; what happened."""
    python = PEER / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
    got = subprocess.run(
        [str(PEER / "bin" / "pip"), "install", "-q", PEER_PACKAGE],
        capture_output=True,
        text=True,
    )
    if got.returncode != 0:
        return f"pip install {PEER_PACKAGE} failed: {got.stderr.strip()[-300:]}"
    # the package loads its bundled library only when converting: load it the same way
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import ctypes, osgb23dtiles.osgb23dtiles as m; ctypes.CDLL(m._get_library_path())",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        return "its library loads (not measured further by this script)"
    last = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
    libc = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout
    lib = next(PEER.rglob("libthreedtiles_lib.so"), None)
    missing = []
    if lib is not None:  # everything the dynamic loader cannot satisfy, not only the first
        deps = subprocess.run(["ldd", str(lib)], capture_output=True, text=True)
        missing = sorted(
            {
                line.strip().split(" (required")[0].split(": ")[-1]
                for line in (deps.stdout + deps.stderr).splitlines()
                if "not found" in line
            }
        )
    return (
        f"does not load: {last}; unmet: {'; '.join(missing) or '?'} "
        f"(this system: {libc.splitlines()[0]})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=36, help="tile folders of the larger copy")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database and output")
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    if SAMPLE is None:
        sys.exit("../shared/data/oblique/production_cgcs2000_gk is absent")
    url = (
        sqlalchemy_url().set(database="cimtwin_bench_oblique").render_as_string(hide_password=False)
    )
    bootstrap.recreate_database(url)
    work = ROOT / "benchmarks" / "data" / "oblique"
    out = work / "tiles"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": url, "CIMTWIN_TILES_DIR": str(out)}
    big = grid_production(SAMPLE, work / f"production_{args.tiles}", args.tiles)
    print(f"{big} made", flush=True)

    rows, buildings = [], 0
    for label, production, dataset in (
        ("sample, no footprints", SAMPLE, "bench_plain"),
        ("sample (1 tile)", SAMPLE, "bench_sample"),
        (f"{args.tiles}-tile copy", big, f"bench_{args.tiles}"),
    ):
        if dataset == "bench_sample":
            buildings = footprints(url)  # from here on, 单体化 has footprints to bake
        osgb = sorted(production.rglob("*.osgb"))
        mb = sum(p.stat().st_size for p in osgb) / 1e6
        folders = len([p for p in (production / "Data").iterdir() if p.is_dir()])
        wall, rss, text, rss_sum = run(
            [*CLI, "import", "oblique", str(production), "--dataset", dataset], env
        )
        nodes, baked = recorded(url, dataset)
        folder = out / f"oblique-{dataset}"
        rows.append(
            {
                "production": label,
                "tile folders": folders,
                "OSGB files": len(osgb),
                "OSGB MB": mb,
                "pyramid nodes": nodes,
                "buildings baked": baked,
                "wall s": wall,
                "s / tile folder": wall / folders,
                "ms / node": 1000 * wall / max(nodes, 1),
                "MB/s": mb / wall,
                "peak RSS MiB": rss,
                "peak PSS sum MiB": rss_sum,
                "output MB": size_mb(folder),
                "glb MB": size_mb(folder, ".glb"),
                "validator": validates(folder / "tileset.json"),
            }
        )
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)

    wall, rss, text, rss_sum = run([*CLI, "tiles", "build-3d", "--layers", "oblique"], env)
    rebuilt = [line for line in text.splitlines() if "tiles built" in line]
    print(
        f"build-3d --layers oblique: {wall:.1f} s, peak RSS {rss:.0f} MiB, {len(rebuilt)} rebuilt"
    )

    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nbuild-3d --layers oblique (re-imports all {len(rebuilt)} productions, "
        f"{buildings} footprints): {wall:.1f} s, peak RSS {rss:.0f} MiB (largest process), "
        f"{rss_sum:.0f} MiB PSS (all processes)"
    )
    if not args.skip_peer:
        print(f"\npeer osgb23dtiles (PyPI, fanvanzh/3dtiles' converter): {peer()}")
        print(
            "fanvanzh/3dtiles and scially/Cesium3DTilesConverter: no Linux package; their "
            "READMEs publish no throughput figure to compare with"
        )
    if not args.keep:
        bootstrap.drop_database(url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
