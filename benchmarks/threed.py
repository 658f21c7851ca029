"""cimtwin `tiles build-3d` on the district, and py3dtiles `export` on the same buildings.

One run, side by side, on this machine:

1. the district-scale sample (generated into benchmarks/data/district on first use) is loaded
   into a scratch database, its buildings as two datasets: one work grid on its own (what a
   surveyor delivers and re-delivers) and the rest;
2. `cimtwin tiles build-3d` of every tileset: wall time, peak RSS, output size, tiles,
   largest content, and whether each tileset passes the 3D Tiles validator;
3. that one grid re-imported with one building's height changed, then `build-3d --changed`:
   wall time, tiles rewritten, and the new height found in the output;
4. the peer: py3dtiles 12.1 `py3dtiles export` from a PostGIS table of the same buildings
   extruded with `ST_Extrude` (`--spec-version 1.1` asked for), in its own venv
   (benchmarks/.peers/py3dtiles, with psycopg2, which `export -D` needs): wall time, output,
   buildings/s, and the validator's verdict on its tileset.

    .venv/bin/python benchmarks/threed.py [--data DIR] [--keep] [--skip-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyogrio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import sqlalchemy_url  # noqa: E402

CIMTWIN = str(ROOT / ".venv" / "bin" / "cimtwin")
VALIDATOR = ROOT.parent / "shared" / "tools" / "3d-tiles-validator" / "validate"
PEER = ROOT / "benchmarks" / ".peers" / "py3dtiles"
PEER_REQUIREMENTS = ROOT / "benchmarks" / "peers" / "py3dtiles-requirements.txt"


GNU_TIME = Path("/usr/bin/time")


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of this command's processes alone (the largest of it and
    its worker processes), and its output.

    Through GNU time when it is there: Linux keeps a process's peak RSS across exec, so a
    command forked straight from this (possibly large) script would report at least this
    script's size; time is small, and the command is forked from it."""
    import tempfile

    with tempfile.TemporaryFile("w+") as log, tempfile.NamedTemporaryFile("r") as peak:
        wrapped = [str(GNU_TIME), "-f", "%M", "-o", peak.name, *cmd] if GNU_TIME.is_file() else cmd
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
        rss_kb = float(peak.read().strip().splitlines()[-1]) if GNU_TIME.is_file() else None
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{text[-6000:]}")
    return wall, (rss_kb if rss_kb is not None else usage.ru_maxrss) / 1024, text


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every content file under a tileset folder: (size, mtime_ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".glb", ".b3dm", ".json") and p.name != "build.json"
    }


def validates(tileset: Path) -> str:
    if not VALIDATOR.is_file():
        return "validator absent"
    proc = subprocess.run([str(VALIDATOR), "-t", str(tileset)], capture_output=True, text=True)
    text = proc.stdout[proc.stdout.find("{") :]
    try:
        report = json.loads(text)
        errors = report.get("numErrors", "?")
    except ValueError:
        errors = "?"
    return "0 errors" if proc.returncode == 0 else f"{errors} errors (exit {proc.returncode})"


def split_one_grid(data: Path, work: Path) -> tuple[Path, Path, str]:
    """The district's buildings as two files: those standing in one work grid (the first
    holding 20 to 200 buildings, by the point on each footprint) and the rest, which keeps the
    underground structures layer of the delivery."""
    src = data / "gpkg" / "buildings.gpkg"
    frame = pyogrio.read_dataframe(src, layer="building")
    grids = pyogrio.read_dataframe(data / "gpkg" / "admin.gpkg", layer="work_grid")
    points = frame.geometry.representative_point()
    chosen = None
    for k, shape in enumerate(grids.geometry):
        inside = points.within(shape).to_numpy()
        if 20 <= inside.sum() <= 200:
            chosen = k
            break
    if chosen is None:
        sys.exit("no work grid holds 20 to 200 buildings")
    code = grids["code"].iloc[chosen]
    work.mkdir(parents=True, exist_ok=True)
    p_one, p_rest = work / "grid_buildings.gpkg", work / "other_buildings.gpkg"
    for path in (p_one, p_rest):
        path.unlink(missing_ok=True)
    pyogrio.write_dataframe(frame[inside], p_one, layer="building")
    pyogrio.write_dataframe(frame[~inside], p_rest, layer="building")
    under = pyogrio.read_dataframe(src, layer="underground_structure")
    pyogrio.write_dataframe(under, p_rest, layer="underground_structure")
    return p_one, p_rest, str(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "district")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--skip-peer", action="store_true", help="only cimtwin")
    args = ap.parse_args()
    if not (args.data / "manifest.json").exists():
        print(f"generating the district sample into {args.data} ...", flush=True)
        subprocess.run(
            [CIMTWIN, "samples", "generate", str(args.data), "--scale", "district"], check=True
        )
    url = sqlalchemy_url().set(database="cimtwin_bench3d")
    url_s = url.render_as_string(hide_password=False)
    bootstrap.recreate_database(url_s)
    work = ROOT / "benchmarks" / "data" / "threed"
    out = work / "out"
    env = {**os.environ, "CIMTWIN_DATABASE_URL": url_s, "CIMTWIN_TILES_DIR": str(out)}

    print("loading the district ...", flush=True)
    t_load, _, _ = run([CIMTWIN, "samples", "load", str(args.data)], env)
    p_one, p_rest, grid = split_one_grid(args.data, work)
    dataset = f"sample:{args.data.name}:buildings"
    run([CIMTWIN, "import", "buildings", str(p_rest), "--dataset", dataset, "--replace"], env)
    run([CIMTWIN, "import", "buildings", str(p_one), "--dataset", "grid-delivery"], env)
    print(f"loaded in {t_load:.0f} s; grid {grid} delivered on its own", flush=True)

    # --- cimtwin: the whole district ---------------------------------------------------------
    subprocess.run(["rm", "-rf", str(out)], check=True)
    wall, rss, _ = run([CIMTWIN, "tiles", "build-3d", "--out", str(out)], env)
    rows = []
    for folder in sorted(p for p in out.iterdir() if (p / "tileset.json").exists()):
        files = [p for p in folder.rglob("*.glb")]
        size = sum(p.stat().st_size for p in files)
        largest = max((p.stat().st_size for p in files), default=0)
        rows.append((folder.name, len(files), size, largest, validates(folder / "tileset.json")))

    # --- cimtwin: one grid re-delivered with one height changed --------------------------------
    import geopandas as gpd

    frame = gpd.read_file(p_one, layer="building")
    frame.loc[frame.index[0], "height_m"] = float(frame["height_m"].iloc[0]) + 7.25
    new_height, code = float(frame["height_m"].iloc[0]), str(frame["bldg_cd"].iloc[0])
    p_one.unlink()
    frame.to_file(p_one, layer="building", driver="GPKG")
    run([CIMTWIN, "import", "buildings", str(p_one), "--dataset", "grid-delivery"], env)
    before = {name: files_of(out / name) for name, *_ in rows}
    inc_wall, _, _ = run([CIMTWIN, "tiles", "build-3d", "--changed", "--out", str(out)], env)
    rewritten = {
        name: sum(1 for k, v in files_of(out / name).items() if before[name].get(k) != v)
        for name in before
    }

    # --- the peer: py3dtiles export on the same buildings ----------------------------------------
    peer = None
    if not args.skip_peer:
        if not (PEER / "bin" / "py3dtiles").exists():
            print("installing the py3dtiles peer ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
            subprocess.run(
                [str(PEER / "bin" / "pip"), "install", "-q", "-r", str(PEER_REQUIREMENTS)],
                check=True,
            )
        u = url
        conninfo = (
            f"dbname={u.database} host={u.host or '127.0.0.1'} port={u.port or 5432} "
            f"user={u.username or 'postgres'}"
        )
        import psycopg

        from cimtwin.db.engine import libpq_dsn

        with psycopg.connect(libpq_dsn(url_s), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS public.bench_extruded")
            conn.execute(
                "CREATE TABLE public.bench_extruded AS SELECT id, ST_Extrude(ST_Translate("
                "ST_Force3D(ST_GeometryN(footprint, 1)), 0, 0, base_elevation_m), 0, 0, "
                "height_m) AS geom FROM cim.building WHERE height_m > 0 AND "
                "base_elevation_m IS NOT NULL"
            )
            n_peer = conn.execute("SELECT count(*) FROM public.bench_extruded").fetchone()[0]
        peer_out = work / "py3dtiles"
        subprocess.run(["rm", "-rf", str(peer_out)], check=True)
        p_wall, p_rss, _ = run(
            [
                str(PEER / "bin" / "py3dtiles"),
                "export",
                "-D",
                conninfo,
                "-t",
                "public.bench_extruded",
                "-c",
                "geom",
                "-i",
                "id",
                "-s",
                str(peer_out),
                "--spec-version",
                "1.1",
            ],
            env,
        )
        contents = [p for p in peer_out.rglob("*") if p.suffix in (".b3dm", ".glb")]
        kinds = sorted({p.suffix for p in contents})
        peer = (
            n_peer,
            p_wall,
            p_rss,
            len(contents),
            sum(p.stat().st_size for p in contents),
            ",".join(kinds),
            validates(peer_out / "tileset.json"),
        )

    # --- the table -----------------------------------------------------------------------------
    import psycopg

    from cimtwin.db.engine import libpq_dsn

    with psycopg.connect(libpq_dsn(url_s)) as conn:
        n_buildings = conn.execute("SELECT count(*) FROM cim.building").fetchone()[0]
    import struct

    packed = struct.pack("<d", new_height)
    found = any(packed in p.read_bytes() for p in (out / "buildings").rglob("*.glb"))
    print()
    print(f"cimtwin build-3d, district: {wall:.1f} s wall, peak RSS {rss:.0f} MiB")
    print(f"{'tileset':<16}{'tiles':>7}{'MB':>9}{'largest kB':>12}  validator")
    for name, n, size, largest, verdict in rows:
        print(f"{name:<16}{n:>7}{size / 1e6:>9.1f}{largest / 1e3:>12.0f}  {verdict}")
    total = sum(r[2] for r in rows)
    print(f"{'all':<16}{sum(r[1] for r in rows):>7}{total / 1e6:>9.1f}")
    print()
    print(
        f"--changed after re-importing grid {grid} with building {code} at {new_height:.2f} m: "
        f"{inc_wall:.1f} s; files rewritten: "
        + ", ".join(f"{k} {v}" for k, v in rewritten.items() if v)
        + f"; the new height in the output: {found}"
    )
    if peer:
        n_peer, p_wall, p_rss, n_files, p_size, kinds, verdict = peer
        print()
        print(f"{'buildings':<24}{'count':>8}{'wall s':>9}{'bldg/s':>9}{'MB':>8}  output")
        b_time = _buildings_time(env, out)
        print(
            f"{'cimtwin (buildings only)':<24}{n_buildings:>8}{b_time:>9.1f}"
            f"{n_buildings / b_time:>9.0f}"
            f"{next(r[2] for r in rows if r[0] == 'buildings') / 1e6:>8.1f}  glb (3D Tiles 1.1), "
            f"{next(r[4] for r in rows if r[0] == 'buildings')}"
        )
        print(
            f"{'py3dtiles 12.1 export':<24}{n_peer:>8}{p_wall:>9.1f}{n_peer / p_wall:>9.0f}"
            f"{p_size / 1e6:>8.1f}  {kinds} ({n_files} files), {verdict}, peak {p_rss:.0f} MiB"
        )
    if not args.keep:
        bootstrap.drop_database(url_s)


def _buildings_time(env: dict[str, str], out: Path) -> float:
    """Wall time of a fresh buildings-only build, for buildings/s beside the peer."""
    target = out.parent / "buildings_only"
    subprocess.run(["rm", "-rf", str(target)], check=True)
    wall, _, _ = run(
        [CIMTWIN, "tiles", "build-3d", "--layers", "buildings", "--out", str(target)], env
    )
    return wall


if __name__ == "__main__":
    main()
