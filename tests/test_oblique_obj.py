"""OBJ productions: the OSGB sample converted level file by level file with osgconv (OBJ +
MTL + JPEG, the PagedLOD ranges lost) and the sample's metadata.xml; the tree is rebuilt from
the file names, the switches from the meshes, and the tileset mirrors the OSGB one."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
import pygltflib
import pytest

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.importer import ObliqueImporter
from cimtwin.importers.oblique.obj import child_files, read_obj
from cimtwin.importers.oblique.pyramid import MAX_SSE, PyramidWriter, production_roots
from cimtwin.importers.report import Report
from cimtwin.importers.runner import run_import
from cimtwin.spatial.model import SCHEMA
from tests.test_oblique_read import OBLIQUE, production
from tests.threed_check import validate
from tests.threed_read import accessor

pytestmark = [
    pytest.mark.skipif(
        OBLIQUE is None, reason="../shared/data/oblique (the OSGB sample) is absent"
    ),
    pytest.mark.skipif(
        shutil.which("osgconv") is None, reason="osgconv missing (apt-get install openscenegraph)"
    ),
]

TILE = "Tile_+000_+012"


def obj_production(out: Path) -> Path:
    shutil.copy(production() / "metadata.xml", out / "metadata.xml")
    for folder in (production() / "Data").iterdir():
        target = out / "Data" / folder.name
        target.mkdir(parents=True)
        for osgb in folder.glob("*.osgb"):
            subprocess.run(
                ["osgconv", "-O", "OutputTextureFiles", str(osgb), osgb.stem + ".obj"],
                cwd=target,  # the textures are written beside the .obj
                env={**os.environ, "OSG_OPTIMIZER": "OFF"},
                capture_output=True,
                check=True,
            )
    return out


def build(source: Path, out: Path):
    meta = read_metadata(source / "metadata.xml")
    to_storage = ToStorage(meta.srs, meta.origin, None)
    return PyramidWriter(source, to_storage, out, Report()).build(
        production_roots(source), {"title": "t"}
    )


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):
    obj = obj_production(tmp_path_factory.mktemp("objprod"))
    osgb_out, obj_out = tmp_path_factory.mktemp("osgb3d"), tmp_path_factory.mktemp("obj3d")
    return obj, (osgb_out, build(production(), osgb_out)), (obj_out, build(obj, obj_out))


def shape(records) -> str:
    """The tree's shape, children in a canonical order."""
    kids: dict[int | None, list[int]] = {}
    for r in records:
        kids.setdefault(r.parent, []).append(r.number)

    def of(n: int) -> str:
        return "(" + "".join(sorted(of(c) for c in kids.get(n, []))) + ")"

    return "".join(sorted(of(n) for n in kids[None]))


def test_the_naming_rule_gives_the_osgb_children(both) -> None:
    obj, _, _ = both
    folder = obj / "Data" / TILE
    assert child_files(folder / f"{TILE}.obj") == [f"{TILE}_L15_0u.obj"]
    assert child_files(folder / f"{TILE}_L15_0u.obj") == [f"{TILE}_L16_0uu.obj"]
    assert child_files(folder / f"{TILE}_L18_0uuuu.obj") == [
        f"{TILE}_L19_0uuuu{k}.obj" for k in range(4)
    ]
    assert child_files(folder / f"{TILE}_L19_0uuuu2.obj") == []
    # the L18 file's 4 groups are its 4 PagedLODs, node k owning child k, as in the OSGB
    nodes = read_obj(folder / f"{TILE}_L18_0uuuu.obj", 74.0).nodes
    assert [n.children for n in nodes] == [[f"{TILE}_L19_0uuuu{k}.obj"] for k in range(4)]


def test_the_tileset_validates_and_mirrors_the_osgb_tree(both) -> None:
    obj, (_, osgb_built), (obj_out, obj_built) = both
    validate(obj_out / "tileset.json")
    levels = Counter(r.level for r in obj_built.records)
    assert levels == Counter(r.level for r in osgb_built.records)
    assert levels == {0: 1, 1: 1, 2: 1, 3: 1, 4: 4, 5: 32}
    assert shape(obj_built.records) == shape(osgb_built.records)
    # per tile, the same vertices (deduplicated by position and texture coordinate)
    assert sum(r.triangle_count for r in obj_built.records) == pytest.approx(
        sum(r.triangle_count for r in osgb_built.records), rel=0.001
    )
    # textures: the delivered JPEG files, byte for byte
    doc = json.loads((obj_out / "tileset.json").read_text())
    g = pygltflib.GLTF2.load_binary(str(obj_out / doc["root"]["content"]["uri"]))
    blob = g.binary_blob()
    view = g.bufferViews[g.images[0].bufferView]
    jpeg = blob[view.byteOffset : view.byteOffset + view.byteLength]
    assert jpeg == (obj / "Data" / TILE / f"{TILE}_L14_0_0_1.jpg").read_bytes()


def test_geometric_errors_are_the_regular_pyramid_of_the_osgb_rule(both) -> None:
    obj, (_, osgb_built), (_, obj_built) = both
    folder = obj / "Data" / TILE
    (root,) = read_obj(folder / f"{TILE}.obj").nodes
    r0 = root.radius
    by_level = {r.level: r.geometric_error for r in obj_built.records}
    # the root: 2·S·r/(r/2) = 4·S, the OSGB production's 64 too
    assert by_level[0] == pytest.approx(4 * MAX_SSE)
    assert by_level[0] == pytest.approx(osgb_built.records[0].geometric_error, rel=1e-4)
    # L15-L17 (nodes of the root's size): halving per level, as the OSGB ranges do
    osgb_levels = {r.level: r.geometric_error for r in osgb_built.records}
    for level in (1, 2, 3):
        assert by_level[level] == pytest.approx(64 / 2**level, rel=0.01)
        assert by_level[level] == pytest.approx(osgb_levels[level], rel=0.01)
    # the L18 nodes: 2·S·r/T with T = r0/2 · 2^4
    nodes = read_obj(folder / f"{TILE}_L18_0uuuu.obj", r0).nodes
    want = sorted(2 * MAX_SSE * n.radius / (r0 / 2 * 2**4) for n in nodes)
    got = sorted(r.geometric_error for r in obj_built.records if r.level == 4)
    assert got == pytest.approx(want, rel=1e-9)
    assert all(r.geometric_error == 0 for r in obj_built.records if r.level == 5)
    assert not math.isclose(want[0], 0.0)


def root_ecef(out: Path) -> np.ndarray:
    doc = json.loads((out / "tileset.json").read_text())
    world = np.array(doc["root"]["transform"]).reshape(4, 4).T
    g = pygltflib.GLTF2.load_binary(str(out / doc["root"]["content"]["uri"]))
    pos = accessor(g, g.binary_blob(), g.meshes[0].primitives[0].attributes.POSITION)
    pos = pos.astype(np.float64)
    enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])
    return (world @ np.c_[enu, np.ones(len(enu))].T).T[:, :3]


def test_a_root_vertex_lands_within_a_centimetre_of_the_osgb_one(both) -> None:
    _, (osgb_out, _), (obj_out, _) = both
    a, b = root_ecef(osgb_out), root_ecef(obj_out)
    miss = float(np.linalg.norm(b - a[0], axis=1).min())
    print(f"the OSGB root's first vertex: {miss * 1000:.3f} mm from the OBJ's")
    assert miss < 0.01
    # and every OBJ root vertex has its OSGB twin within a centimetre
    worst = max(
        float(np.linalg.norm(a[None, :, :] - chunk[:, None, :], axis=2).min(axis=1).max())
        for chunk in np.array_split(b, 16)
    )
    assert worst < 0.01


def test_the_importer_takes_an_obj_production(both, scratch_database: str, tmp_path) -> None:
    obj, _, _ = both
    importer = ObliqueImporter(tiles_dir=tmp_path)
    result = run_import(importer, [obj], ImportOptions(dataset="obj_gk"), scratch_database)
    assert result.status == "succeeded"
    assert result.counts["oblique_mesh_tile"] == 40
    validate(tmp_path / "oblique-obj_gk" / "tileset.json")
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        formats = conn.execute(
            f"SELECT DISTINCT format FROM {SCHEMA}.oblique_mesh_tile WHERE dataset = 'obj_gk'"
        ).fetchall()
    assert formats == [("obj",)]
