"""cimtwin `import ifc` + `tiles build-3d --layers bim` against py3dtiles 12.1's own IFC
conversion (`py3dtiles convert FILE.ifc`), on the same files, side by side in one run:

1. the georeferenced Duplex (../shared/data/ifc, IFC2x3, 215 drawn elements), placed by
   ``--origin`` at the North Station;
2. a large IFC4 model written here with ifcopenshell (a 32-storey frame of columns, beams,
   walls and slab panels, about 50 000 elements, each its own extruded solid), georeferenced
   by an IfcMapConversion to EPSG:4547 at the North Station.

For each: import time and peak RSS, 3D build time and peak RSS, output size, tiles, whether
the 3D Tiles validator passes; for py3dtiles: time, peak RSS, output, the validator's verdict
and where it puts the model against the map conversion (distance between the tileset's root
position and where cimtwin, i.e. the map conversion, puts the model's local origin).

    .venv/bin/python benchmarks/bim.py [--storeys 32] [--keep] [--skip-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from threed import PEER, PEER_REQUIREMENTS, run, validates  # noqa: E402

from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402

IFC_DIR = next(
    (
        p
        for p in (ROOT.parent / "shared/data/ifc", ROOT.parent.parent / "shared/data/ifc")
        if p.is_dir()
    ),
    ROOT.parent / "shared/data/ifc",
)
DUPLEX = IFC_DIR / "Duplex_A_20110907_georeferenced.ifc"
#: the North Station (lon, lat) and the 1985 height the models stand on
ORIGIN = (114.0239, 22.6080, 80.0)
CIM = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'cimtwin'; from cimtwin.cli import main; main()",
]


def write_frame_model(path: Path, storeys: int, grid: int = 20, bay_m: float = 6.0) -> int:
    """A storeyed frame as IFC4: per storey a grid x grid of columns, the beams between them,
    walls along the edge and one slab panel per bay; every element its own extruded
    rectangle, in one IfcBuildingStorey per level. The map conversion puts the local origin
    at :data:`ORIGIN` in EPSG:4547. Returns the element count."""
    import ifcopenshell
    import ifcopenshell.guid
    from pyproj import Transformer

    f = ifcopenshell.file(schema="IFC4")
    new = ifcopenshell.guid.new

    def point(*xyz: float):
        return f.createIfcCartesianPoint([float(v) for v in xyz])

    def direction(*xyz: float):
        return f.createIfcDirection([float(v) for v in xyz])

    def placement(x: float, y: float, z: float, relative=None, angle: float = 0.0):
        axis = f.createIfcAxis2Placement3D(
            point(x, y, z), direction(0, 0, 1), direction(np.cos(angle), np.sin(angle), 0)
        )
        return f.createIfcLocalPlacement(relative, axis)

    unit = f.createIfcSIUnit(None, "LENGTHUNIT", None, "METRE")
    project = f.createIfcProject(
        new(), None, "cimtwin benchmark frame", None, None, None, None, None,
        f.createIfcUnitAssignment([unit]),
    )  # fmt: skip
    context = f.createIfcGeometricRepresentationContext(
        None, "Model", 3, 1e-5, f.createIfcAxis2Placement3D(point(0, 0, 0)), None
    )
    body = f.createIfcGeometricRepresentationSubContext(
        "Body", "Model", None, None, None, None, context, None, "MODEL_VIEW", None
    )
    project.RepresentationContexts = [context]
    east, north = Transformer.from_crs("EPSG:4326", "EPSG:4547", always_xy=True).transform(
        ORIGIN[0], ORIGIN[1]
    )
    crs = f.createIfcProjectedCRS("EPSG:4547", None, None, None, None, None, None)
    f.createIfcMapConversion(context, crs, east, north, ORIGIN[2], 1.0, 0.0, None)
    site = f.create_entity(
        "IfcSite", GlobalId=new(), Name="site", ObjectPlacement=placement(0, 0, 0),
        CompositionType="ELEMENT",
    )  # fmt: skip
    building = f.create_entity(
        "IfcBuilding", GlobalId=new(), Name="frame",
        ObjectPlacement=placement(0, 0, 0, site.ObjectPlacement), CompositionType="ELEMENT",
    )  # fmt: skip
    f.createIfcRelAggregates(new(), None, None, None, project, [site])
    f.createIfcRelAggregates(new(), None, None, None, site, [building])
    profiles: dict[tuple[float, float], object] = {}

    def box_shape(dx: float, dy: float, dz: float):
        key = (dx, dy)
        if key not in profiles:
            profiles[key] = f.createIfcRectangleProfileDef(
                "AREA", None, f.createIfcAxis2Placement2D(point(0, 0)), dx, dy
            )
        solid = f.createIfcExtrudedAreaSolid(
            profiles[key], f.createIfcAxis2Placement3D(point(0, 0, 0)), direction(0, 0, 1), dz
        )
        rep = f.createIfcShapeRepresentation(body, "Body", "SweptSolid", [solid])
        return f.createIfcProductDefinitionShape(None, None, [rep])

    storey_h, count = 3.6, 0
    span = (grid - 1) * bay_m
    stories = []
    for level in range(storeys):
        z = level * storey_h
        storey = f.create_entity(
            "IfcBuildingStorey",
            GlobalId=new(),
            Name=f"F{level + 1}",
            ObjectPlacement=placement(0, 0, z, building.ObjectPlacement),
            CompositionType="ELEMENT",
            Elevation=z,
        )
        stories.append(storey)
        items = []

        def element(
            cls: str,
            name: str,
            x: float,
            y: float,
            z0: float,
            dims: tuple,
            items=items,
            storey=storey,
        ) -> None:
            items.append(
                f.create_entity(
                    cls,
                    GlobalId=new(),
                    Name=name,
                    ObjectPlacement=placement(x, y, z0, storey.ObjectPlacement),
                    Representation=box_shape(*dims),
                )
            )

        top = storey_h - 0.6
        for i in range(grid):
            for j in range(grid):
                x, y = i * bay_m, j * bay_m
                element("IfcColumn", f"C{i}-{j}", x, y, 0, (0.5, 0.5, storey_h - 0.3))
                if i < grid - 1:
                    element("IfcBeam", f"BX{i}-{j}", x + bay_m / 2, y, top, (bay_m - 0.5, 0.3, 0.6))
                if j < grid - 1:
                    element("IfcBeam", f"BY{i}-{j}", x, y + bay_m / 2, top, (0.3, bay_m - 0.5, 0.6))
                if i < grid - 1 and j < grid - 1:
                    c = bay_m / 2
                    element("IfcSlab", f"S{i}-{j}", x + c, y + c, storey_h - 0.2,
                            (bay_m - 0.3, bay_m - 0.3, 0.2))  # fmt: skip
        for k in range(grid - 1):  # the edge walls
            m = k * bay_m + bay_m / 2
            w = bay_m - 0.5
            for x, y, dx, dy in (
                (m, 0, w, 0.2),
                (m, span, w, 0.2),
                (0, m, 0.2, w),
                (span, m, 0.2, w),
            ):
                element("IfcWall", f"W{k}", x, y, 0, (dx, dy, top))
        f.createIfcRelContainedInSpatialStructure(new(), None, None, None, items, storey)
        count += len(items)
    f.createIfcRelAggregates(new(), None, None, None, building, stories)
    f.write(str(path))
    return count


def folder_stats(folder: Path) -> tuple[int, int, int]:
    contents = [p for p in folder.rglob("*") if p.suffix in (".glb", ".b3dm")]
    sizes = [p.stat().st_size for p in contents]
    return len(contents), sum(sizes), max(sizes, default=0)


def peer_position(tileset: Path) -> np.ndarray | None:
    """Where py3dtiles puts the model: its root transform's translation (ECEF), else the
    centre of its root bounding box."""
    doc = json.loads(tileset.read_text())
    root = doc["root"]
    if "transform" in root:
        return np.array(root["transform"][12:15], dtype=float)
    box = root.get("boundingVolume", {}).get("box")
    return np.array(box[:3], dtype=float) if box else None


def cimtwin_origin_ecef() -> np.ndarray:
    """Where the map conversion (and cimtwin) puts the models' local origin, in ECEF
    (EGM96 geoid, as the placement path)."""
    import pyproj

    pyproj.datadir.append_data_dir("/usr/share/proj")
    t = pyproj.Transformer.from_crs("EPSG:4326+5773", "EPSG:4978", always_xy=True)
    return np.array(t.transform(*ORIGIN))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--storeys",
        type=int,
        default=32,
        help="storeys of the large model (about 1 600 elements each)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--skip-peer", action="store_true", help="only cimtwin")
    args = ap.parse_args()
    work = ROOT / "benchmarks" / "data" / "bim"
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"frame_{args.storeys}.ifc"
    if not big.is_file():
        t0 = time.perf_counter()
        n = write_frame_model(big, args.storeys)
        print(f"wrote {big.name}: {n} elements in {time.perf_counter() - t0:.1f} s", flush=True)

    base = sqlalchemy_url(os.environ.get("CIMTWIN_DATABASE_URL"))
    url = base.set(database="cimtwin_bench_bim").render_as_string(hide_password=False)
    bootstrap.recreate_database(url)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    rows = []
    origin = f"{ORIGIN[0]},{ORIGIN[1]},{ORIGIN[2]}"
    for label, path, extra in (
        ("Duplex (IFC2x3)", DUPLEX, ["--origin", origin]),
        (f"frame {args.storeys} storeys (IFC4)", big, []),
    ):
        dataset = path.stem
        i_wall, i_rss, _ = run(
            [*CIM, "import", "ifc", str(path), "--dataset", dataset, *extra], env
        )
        with psycopg.connect(libpq_dsn(url)) as conn:
            elements = conn.execute(
                "SELECT count(*) FROM cim.bim_element e JOIN cim.bim_model m ON m.id = e.model_id "
                "WHERE m.dataset = %s",
                (dataset,),
            ).fetchone()[0]
        out = work / "cimtwin"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        b_wall, b_rss, _ = run(
            [*CIM, "tiles", "build-3d", "--layers", "bim", "--out", str(out)], env
        )
        # each model is deleted after its row: the build holds this one only
        (folder,) = [p for p in out.iterdir() if p.name.startswith("bim-")]
        tiles, size, largest = folder_stats(folder)
        verdict = validates(folder / "tileset.json")
        peer = None
        if not args.skip_peer:
            if not (PEER / "bin" / "py3dtiles").exists():
                subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
                subprocess.run(
                    [str(PEER / "bin" / "pip"), "install", "-q", "-r", str(PEER_REQUIREMENTS)],
                    check=True,
                )
            p_out = work / "py3dtiles"
            subprocess.run(["rm", "-rf", str(p_out)], check=True)
            p_wall, p_rss, _ = run(
                [str(PEER / "bin" / "py3dtiles"), "convert", str(path), "--out", str(p_out)], env
            )
            p_tiles, p_size, _ = folder_stats(p_out)
            at = peer_position(p_out / "tileset.json")
            off = float(np.linalg.norm(at - cimtwin_origin_ecef())) if at is not None else None
            peer = (p_wall, p_rss, p_tiles, p_size, validates(p_out / "tileset.json"), off)
        rows.append(
            (label, elements, i_wall, i_rss, b_wall, b_rss, tiles, size, largest, verdict, peer)
        )
        with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
            conn.execute("DELETE FROM cim.bim_model WHERE dataset = %s", (dataset,))

    print()
    print(f"{'model':<26}{'elements':>9}{'import s':>10}{'RSS MiB':>9}{'3D s':>8}{'RSS MiB':>9}"
          f"{'tiles':>7}{'MB':>7}{'largest kB':>12}  validator")  # fmt: skip
    for label, n, iw, ir, bw, br, t, s, lg, v, _ in rows:
        print(f"{label:<26}{n:>9}{iw:>10.1f}{ir:>9.0f}{bw:>8.1f}{br:>9.0f}{t:>7}{s / 1e6:>7.1f}"
              f"{lg / 1e3:>12.0f}  {v}")  # fmt: skip
    if not args.skip_peer:
        print()
        print(f"{'py3dtiles 12.1 convert':<26}{'wall s':>9}{'RSS MiB':>9}{'tiles':>7}{'MB':>7}"
              f"{'off the map conversion':>24}  validator")  # fmt: skip
        for label, *_, peer in rows:
            pw, pr, pt, ps, pv, off = peer
            where = f"{off / 1000:,.1f} km" if off is not None else "unknown"
            print(f"{label:<26}{pw:>9.1f}{pr:>9.0f}{pt:>7}{ps / 1e6:>7.1f}{where:>24}  {pv}")
    if not args.keep:
        bootstrap.drop_database(url)


if __name__ == "__main__":
    main()
