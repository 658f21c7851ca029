"""单体化: a building footprint drawn over part of the sample production is baked into the photo
mesh at import. Every triangle whose centroid (decoded from the glb, put back through the
tileset's transforms into the storage CRS) lies in the footprint carries the building's
feature id on all three vertices, every other one the null feature id; the property table
holds that building's record; the rows list the building for the tiles that touch it; the
tileset still validates. ``build-3d --layers oblique`` re-imports the production so a
building added later is picked up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pygltflib
import pytest
import shapely
from pyproj import Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.importer import ObliqueImporter
from cimtwin.importers.oblique.osgb import read_osgb
from cimtwin.importers.runner import run_import
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.base import SRID
from cimtwin.spatial.model import SCHEMA
from cimtwin.tiles.threed.mesh import NO_FEATURE
from tests.conftest import ROOT
from tests.test_oblique_read import OBLIQUE, ROOT_FILE, production
from tests.threed_check import validate
from tests.threed_read import accessor, table_column, walk_tiles

pytestmark = [
    pytest.mark.skipif(
        OBLIQUE is None, reason="../shared/data/oblique (the OSGB sample) is absent"
    ),
    pytest.mark.skipif(
        shutil.which("osgconv") is None, reason="osgconv missing (apt-get install openscenegraph)"
    ),
]

BUILDING_ID, FAR_ID, LATER_ID = 910_001, 910_002, 910_003
GRID, OTHER_GRID = "440199001001001", "440199001001002"
#: a margin within which float32 positions may put a centroid on the other side (1 mm)
EDGE_M = 0.001


def sample_extent() -> tuple[float, float, float, float]:
    """The root tile's vertices in the storage CRS (an independent read of the OSGB)."""
    meta = read_metadata(production() / "metadata.xml")
    to_storage = ToStorage(meta.srs, meta.origin, None)
    (node,) = read_osgb(production() / ROOT_FILE).nodes
    xy = to_storage(np.concatenate([g.positions for g in node.geometries]))
    return (
        float(xy[:, 0].min()),
        float(xy[:, 1].min()),
        float(xy[:, 0].max()),
        float(xy[:, 1].max()),
    )


def footprint(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    """A pentagon over the western part of the box: not axis-aligned, so triangles are cut
    along slanted edges too."""
    w, h = x1 - x0, y1 - y0
    return shapely.Polygon(
        [
            (x0 + 0.10 * w, y0 + 0.20 * h),
            (x0 + 0.45 * w, y0 + 0.15 * h),
            (x0 + 0.55 * w, y0 + 0.55 * h),
            (x0 + 0.30 * w, y0 + 0.85 * h),
            (x0 + 0.05 * w, y0 + 0.60 * h),
        ]
    )


def add_building(url: str, bid: int, code: str, shape: shapely.Polygon, name: str) -> None:
    with psycopg.connect(libpq_dsn(url)) as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.building (id, building_code, name, use, height_m, floors, "
            "underground_floors, base_elevation_m, grid_code, county_code, footprint) VALUES "
            "(%s, %s, %s, 'office', 42.5, 12, 1, 10.0, %s, left(%s, 6), "
            "ST_Multi(ST_GeomFromWKB(%s, %s)))",
            (bid, code, name, GRID, GRID, shapely.to_wkb(shape), SRID),
        )


def decoded_triangles(folder: Path) -> list[dict]:
    """Per content tile: storage-CRS vertex positions, triangles, the feature id of each
    vertex and the property table, read back through pygltflib and the tile transforms."""
    doc = json.loads((folder / "tileset.json").read_text())
    tiles: list = []
    walk_tiles(doc["root"], np.eye(4), tiles)
    to_storage = Transformer.from_crs("EPSG:4978", crs_mod.storage_crs(), always_xy=True)
    out = []
    for tile, world in tiles:
        uri = tile.get("content", {}).get("uri")
        if not uri:
            continue
        g = pygltflib.GLTF2.load_binary(str(folder / uri))
        blob = g.binary_blob()
        prims = g.meshes[0].primitives
        pos = accessor(g, blob, prims[0].attributes.POSITION).astype(np.float64)
        enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])  # glTF y-up -> z-up
        ecef = (world @ np.c_[enu, np.ones(len(enu))].T).T[:, :3]
        x, y, _ = to_storage.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
        tris = np.concatenate([accessor(g, blob, p.indices) for p in prims]).reshape(-1, 3)
        ext = prims[0].extensions or {}
        ids = np.full(len(pos), NO_FEATURE, dtype=np.int64)
        table: dict = {}
        if "EXT_mesh_features" in ext:
            (fid,) = ext["EXT_mesh_features"]["featureIds"]
            raw = accessor(g, blob, prims[0].attributes._FEATURE_ID_0)
            ids = raw.astype(np.int64)
            (pt,) = g.extensions["EXT_structural_metadata"]["propertyTables"]
            cls = g.extensions["EXT_structural_metadata"]["schema"]["classes"][pt["class"]]
            for name, column in pt["properties"].items():
                spec = cls["properties"][name]
                kind = spec.get("componentType", spec["type"])
                table[name] = table_column(g, blob, column, kind)
            table["_featureCount"] = fid["featureCount"]
            table["_null"] = fid.get("nullFeatureId")
        out.append(
            {"uri": uri, "xy": np.column_stack([x, y]), "tris": tris, "ids": ids, "table": table}
        )
    return out


def test_labels_are_the_lowest_containing_footprint() -> None:
    """Footprints.label against a brute-force shapely answer: random points, overlapping and
    holed footprints; where several contain a point, the lowest id."""
    from cimtwin.importers.oblique.footprints import Footprints

    rng = np.random.default_rng(13)
    shapes = [
        shapely.Point(rng.uniform(0, 100), rng.uniform(0, 100)).buffer(rng.uniform(3, 20))
        for _ in range(40)
    ]
    shapes[0] = shapely.box(10, 10, 60, 60).difference(shapely.box(20, 20, 40, 40))  # a hole
    ids = np.arange(100, 140, dtype=np.int64)
    found = Footprints(ids, [("", "", "", 0.0, 0, "")] * 40, np.array(shapes, dtype=object))
    x, y = rng.uniform(-10, 110, 20_000), rng.uniform(-10, 110, 20_000)
    want = np.full(len(x), -1)
    for i in reversed(range(len(shapes))):
        want[shapely.contains_xy(shapes[i], x, y)] = i
    got = found.label(x, y)
    assert np.array_equal(got, want)
    assert (got == -1).sum() > 1000 and len(set(got.tolist())) > 30


def test_a_footprint_is_baked_into_the_photo_mesh(scratch_database: str, tmp_path: Path) -> None:
    x0, y0, x1, y1 = sample_extent()
    shape = footprint(x0, y0, x1, y1)
    add_building(scratch_database, BUILDING_ID, "TEST-OBL-1", shape, "照片楼")
    far = shapely.box(x1 + 5000, y1 + 5000, x1 + 5050, y1 + 5050)  # outside: never read
    add_building(scratch_database, FAR_ID, "TEST-OBL-2", far, "远楼")

    importer = ObliqueImporter(tiles_dir=tmp_path)  # the runner gives it the database
    result = run_import(importer, [production()], ImportOptions(dataset="mono"), scratch_database)
    assert result.status == "succeeded"
    folder = tmp_path / "oblique-mono"
    validate(folder / "tileset.json")
    doc = json.loads((folder / "tileset.json").read_text())
    assert doc["asset"]["extras"]["layer"] == "buildings"
    assert set(doc["schema"]["classes"]["building"]["properties"]) == {
        "id",
        "code",
        "name",
        "use",
        "height",
        "floors",
        "grid",
    }

    inside_total = outside_total = edge_cases = 0
    touching: set[str] = set()
    for tile in decoded_triangles(folder):
        tris, ids, xy = tile["tris"], tile["ids"], tile["xy"]
        # one id per triangle: its three vertices agree (no interpolated ids across a face)
        assert np.all(ids[tris[:, 0]] == ids[tris[:, 1]])
        assert np.all(ids[tris[:, 0]] == ids[tris[:, 2]])
        centroid = xy[tris].mean(axis=1)
        inside = shapely.contains_xy(shape, centroid[:, 0], centroid[:, 1])
        marked = ids[tris[:, 0]] != NO_FEATURE
        wrong = np.flatnonzero(inside != marked)
        if len(wrong):  # only where float32 leaves a centroid within a millimetre of the edge
            edge = shapely.distance(shape.exterior, shapely.points(centroid[wrong]))
            assert float(edge.max()) < EDGE_M, f"{tile['uri']}: {len(wrong)} triangles wrong"
            edge_cases += len(wrong)
        inside_total += int(inside.sum())
        outside_total += int((~inside).sum())
        if marked.any():
            touching.add(tile["uri"])
            t = tile["table"]
            assert t["_featureCount"] == 1
            # vertices outside: EXT_mesh_features' null feature id (none when all are inside)
            assert t["_null"] == (NO_FEATURE if (~marked).any() else None)
            assert t["id"] == [BUILDING_ID]  # the buildings collection's id, nothing else
            assert t["code"] == ["TEST-OBL-1"] and t["name"] == ["照片楼"]
            assert t["use"] == ["office"] and t["height"] == [42.5] and t["floors"] == [12]
            assert t["grid"] == [GRID]
            assert set(ids[tris[marked, 0]].tolist()) == {0}
        else:
            assert not tile["table"]  # outside every footprint: no ids, no table
    print(
        f"{inside_total} triangles inside the footprint, {outside_total} outside, "
        f"{len(touching)} tiles touch it, {edge_cases} within {EDGE_M * 1000:.0f} mm of its edge"
    )
    assert inside_total > 1000 and outside_total > 1000  # the footprint cuts the mesh

    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        got = conn.execute(
            f"SELECT content_uri, building_ids FROM {SCHEMA}.oblique_mesh_tile "
            "WHERE dataset = 'mono' AND content_uri IS NOT NULL"
        ).fetchall()
        via_index = conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.oblique_mesh_tile "
            "WHERE building_ids @> ARRAY[%s]::bigint[]",
            (BUILDING_ID,),
        ).fetchone()
    assert {uri for uri, b in got if b == [BUILDING_ID]} == touching
    assert all(b in ([], [BUILDING_ID]) for _, b in got)
    assert via_index is not None and via_index[0] == len(touching)


def test_build_3d_reimports_the_production_with_new_buildings(
    scratch_database: str, tmp_path: Path
) -> None:
    """A building added after the import is baked in by ``build-3d --layers oblique`` (a new
    import batch from the recorded folder and options); ``--changed`` then has nothing to do
    (no buildings import since)."""
    x0, y0, x1, y1 = sample_extent()
    first = tmp_path / "first"
    options = ImportOptions(dataset="later")
    assert run_import(ObliqueImporter(tiles_dir=first), [production()], options, scratch_database)
    w, h = x1 - x0, y1 - y0
    east = shapely.box(x0 + 0.65 * w, y0 + 0.20 * h, x0 + 0.90 * w, y0 + 0.50 * h)
    add_building(scratch_database, LATER_ID, "TEST-OBL-3", east, "后来楼")

    def tiles_with(folder: Path, bid: int) -> set[str]:
        return {t["uri"] for t in decoded_triangles(folder) if bid in t["table"].get("id", [])}

    assert tiles_with(first / "oblique-later", LATER_ID) == set()

    def build(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cimtwin.cli", "tiles", "build-3d", "--layers", "oblique"]
            + ["--out", str(tmp_path / "out"), *extra],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={**os.environ, "CIMTWIN_DATABASE_URL": scratch_database, "COLUMNS": "300"},
        )

    proc = build()
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / "oblique-later"
    assert f"{folder / 'tileset.json'}: 40 tiles built" in proc.stderr
    validate(folder / "tileset.json")
    touched = tiles_with(folder, LATER_ID)
    assert touched  # the new building is in the photo mesh now
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        batches = conn.execute(
            f"SELECT status FROM {SCHEMA}.import_batch WHERE kind = 'oblique' "
            "AND dataset = 'later' ORDER BY id"
        ).fetchall()
        listed = conn.execute(
            f"SELECT content_uri FROM {SCHEMA}.oblique_mesh_tile WHERE dataset = 'later' "
            "AND building_ids @> ARRAY[%s]::bigint[]",
            (LATER_ID,),
        ).fetchall()
    # the rebuild is an import with its own provenance, replacing the first
    assert batches == [("replaced",), ("succeeded",)]
    assert {r[0] for r in listed} == touched

    again = build("--changed")
    assert again.returncode == 0, again.stderr
    assert "tiles built" not in again.stderr  # no buildings import since: nothing to redo


def test_the_grid_summary_counts_the_photo_tiles(scratch_database: str) -> None:
    """A work grid over the western half of the sample: its summary counts the photo tiles
    (with a mesh) whose bounds meet it, as shapely finds them from the rows, the leaves among
    them, the productions, and its buildings baked into the mesh; a grid elsewhere none."""
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app
    from cimtwin.settings import Settings

    x0, y0, x1, y1 = sample_extent()
    west = shapely.box(x0 - 10, y0 - 10, (x0 + x1) / 2, y1 + 10)
    away = shapely.box(x1 + 1000, y1 + 1000, x1 + 1100, y1 + 1100)
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.street (code, name, geom) VALUES ('440199001', '测试街', "
            "ST_Multi(ST_GeomFromWKB(%s, %s)))",
            (shapely.to_wkb(shapely.union(west, away).envelope), SRID),
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.community (code, street_code, name, geom) VALUES "
            "('440199001001', '440199001', '测试社区', ST_Multi(ST_GeomFromWKB(%s, %s)))",
            (shapely.to_wkb(shapely.union(west, away).envelope), SRID),
        )
        for code, box in ((GRID, west), (OTHER_GRID, away)):
            conn.execute(
                f"INSERT INTO {SCHEMA}.work_grid (code, community_code, name, area_m2, geom) "
                "VALUES (%s, '440199001001', %s, %s, ST_Multi(ST_GeomFromWKB(%s, %s)))",
                (code, code, box.area, shapely.to_wkb(box), SRID),
            )
        tiles = conn.execute(
            f"SELECT id, dataset, ST_AsBinary(footprint), content_uri IS NOT NULL, "
            f"NOT EXISTS (SELECT 1 FROM {SCHEMA}.oblique_mesh_tile c WHERE c.parent_id = t.id) "
            f"FROM {SCHEMA}.oblique_mesh_tile t"
        ).fetchall()
    meeting = [t for t in tiles if t[3] and shapely.intersects(west, shapely.from_wkb(bytes(t[2])))]
    assert 0 < len(meeting) < sum(1 for t in tiles if t[3])  # the grid holds only some
    with TestClient(create_app(Settings(database_url=scratch_database))) as client:
        got = client.get(f"/grids/{GRID}")
        assert got.status_code == 200, got.text
        assert got.json()["oblique"] == {
            "tiles": len(meeting),
            "finest_tiles": sum(1 for t in meeting if t[4]),
            "productions": len({t[1] for t in meeting}),
            # the three test buildings are recorded in this grid: the pentagon and the later
            # one are in the photo mesh, the far one in none
            "buildings_in_mesh": 2,
        }
        assert client.get(f"/grids/{OTHER_GRID}").json()["oblique"] == {
            "tiles": 0,
            "finest_tiles": 0,
            "productions": 0,
            "buildings_in_mesh": 0,
        }
