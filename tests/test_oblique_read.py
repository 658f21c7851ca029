"""Reading the ContextCapture sample production (``../shared/data/oblique``) into 3D Tiles,
without a database: the tileset validates, keeps the LOD pyramid with geometric errors from
the production's own ranges (2·S·r/T, hand-computed here from osgconv's text), places a
vertex within a centimetre of PROJ through the WKT's own parameters, warns about the WKT's
wrong label and the missing L20 children, and names a corrupt file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pyproj
import pytest
from pyproj import CRS, Transformer
from pyproj.crs import CompoundCRS

from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.osgb import OsgbError, read_osgb
from cimtwin.importers.oblique.pyramid import PyramidWriter, production_roots
from cimtwin.importers.report import Report
from tests.threed_check import validate
from tests.threed_read import accessor, walk_tiles

ROOT = Path(__file__).resolve().parents[1]
_DATA = Path("shared") / "data" / "oblique"
#: ../shared beside the clone; a git worktree one folder deeper finds it too
OBLIQUE = next((p for p in (ROOT.parent / _DATA, ROOT.parent.parent / _DATA) if p.is_dir()), None)
GRIDS = Path("/usr/share/proj")

pytestmark = [
    pytest.mark.skipif(
        OBLIQUE is None, reason="../shared/data/oblique (the OSGB sample) is absent"
    ),
    pytest.mark.skipif(
        shutil.which("osgconv") is None, reason="osgconv missing (apt-get install openscenegraph)"
    ),
]


def production() -> Path:
    assert OBLIQUE is not None
    return OBLIQUE / "production_cgcs2000_gk"


ROOT_FILE = "Data/Tile_+000_+012/Tile_+000_+012.osgb"


def osgt_text(path: Path, tmp: Path) -> str:
    """osgconv's own text form of one file, read here by regular expressions (an oracle
    independent of the reader's parser)."""
    out = tmp / (path.stem + ".osgt")
    subprocess.run(
        ["osgconv", "-O", "WriteImageHint=WriteOut precision 9", str(path), str(out)],
        cwd=tmp,
        env={**os.environ, "OSG_OPTIMIZER": "OFF"},
        capture_output=True,
        check=True,
    )
    return out.read_text()


def sphere_and_switch(text: str) -> tuple[float, float]:
    """(r, T) of the first PagedLOD: UserCenter's radius, and where the child file's
    pixel-size range begins."""
    radius = float(re.search(r"UserCenter \S+ \S+ \S+ (\S+)", text).group(1))  # type: ignore[union-attr]
    ranges = re.search(r"RangeList 2 \{\s*(\S+) (\S+)\s*(\S+) (\S+)", text)
    assert ranges is not None
    assert "RangeMode PIXEL_SIZE_ON_SCREEN" in text
    return radius, float(ranges.group(3))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("oblique")
    meta = read_metadata(production() / "metadata.xml")
    report = Report()
    to_storage = ToStorage(meta.srs, meta.origin, None)
    result = PyramidWriter(production(), to_storage, out, report).build(
        production_roots(production()), {"title": "sample"}
    )
    return out, result, report, meta


def test_the_tileset_validates(built) -> None:
    out, result, _, _ = built
    validate(out / "tileset.json")
    doc = json.loads((out / "tileset.json").read_text())
    assert doc["asset"]["version"] == "1.1"
    # the pyramid is kept: root, L15, L16, L17 one node each, L18 4 nodes, L19 8 each
    levels = [r.level for r in result.records]
    assert levels.count(0) == levels.count(1) == levels.count(2) == levels.count(3) == 1
    assert levels.count(4) == 4 and levels.count(5) == 32
    assert result.files_read == 9


def test_geometric_errors_follow_the_production_ranges(built, tmp_path: Path) -> None:
    out, _, _, _ = built
    doc = json.loads((out / "tileset.json").read_text())
    tile = doc["root"]
    chain = ["", "_L15_0u", "_L16_0uu", "_L17_0uuu", "_L18_0uuuu"]
    for level, suffix in enumerate(chain):
        path = production() / "Data" / "Tile_+000_+012" / f"Tile_+000_+012{suffix}.osgb"
        r, t = sphere_and_switch(osgt_text(path, tmp_path))
        want = 2 * 16 * r / t
        print(
            f"level {level}: r {r} m, T {t} px, geometricError "
            f"{tile['geometricError']:.6f} (2*S*r/T {want:.6f})"
        )
        assert tile["geometricError"] == pytest.approx(want, rel=1e-6)
        assert tile["refine"] == "REPLACE"
        tile = tile["children"][0]
    # the root by hand: r = 74.8666, T = 37.4333 px -> 64 m
    assert doc["root"]["geometricError"] == pytest.approx(64.0, rel=1e-5)
    assert doc["geometricError"] >= doc["root"]["geometricError"]


def test_missing_children_are_warned_and_their_parents_are_leaves(built) -> None:
    out, result, report, _ = built
    missing = [p for p in report.warnings if p.rule == "oblique-missing-child"]
    assert len(missing) == 32
    assert all("_L20_" in p.message for p in missing)
    leaves = [r for r in result.records if r.level == 5]
    assert all(r.geometric_error == 0.0 for r in leaves)
    tiles: list = []
    doc = json.loads((out / "tileset.json").read_text())
    walk_tiles(doc["root"], np.eye(4), tiles)
    assert sum(1 for t, _ in tiles if not t.get("children")) == 32


def test_the_label_that_disagrees_with_the_wkt_is_warned(built) -> None:
    _, _, _, meta = built
    (warning,) = meta.srs.warnings
    assert "EPSG:4547" in warning and "113.37" in warning and "km" in warning
    assert meta.srs.crs is not None and meta.srs.crs.to_epsg() is None  # parameters, not label


def _wkt_without_label() -> str:
    text = (production() / "metadata.xml").read_text()
    wkt = re.search(r"<SRS>(.*)</SRS>", text, re.DOTALL).group(1)  # type: ignore[union-attr]
    return re.sub(r',\s*AUTHORITY\["EPSG","4547"\]\]\s*$', "]", wkt.strip())


@pytest.mark.skipif(not (GRIDS / "egm96_15.gtx").is_file(), reason="proj-data's EGM96 absent")
def test_a_root_vertex_lands_within_a_centimetre_of_proj(built, tmp_path: Path) -> None:
    out, _, _, meta = built
    text = osgt_text(production() / ROOT_FILE, tmp_path)
    block = re.search(r"VertexArray TRUE \{.*?vector \d+ \{\s*(\S+) (\S+) (\S+)", text, re.DOTALL)
    assert block is not None
    local = np.array([float(block.group(i)) for i in (1, 2, 3)])
    origin = np.array([501027.524, 2488718.808, 0.0])

    # PROJ's answer: the WKT's own parameters, heights as EGM96 heights (the default
    # CIMTWIN_HEIGHT_OFFSET_M 0 takes a 1985 height as one), to ECEF
    pyproj.datadir.append_data_dir(str(GRIDS))  # PROJ finds proj-data's EGM96 grid
    horizontal = CRS.from_wkt(_wkt_without_label())
    compound = CompoundCRS("production + EGM96 height", [horizontal, CRS("EPSG:5773")])
    proj = Transformer.from_crs(compound, CRS("EPSG:4978"), always_xy=True)
    want = np.array(proj.transform(*(local + origin)))

    doc = json.loads((out / "tileset.json").read_text())
    world = np.array(doc["root"]["transform"]).reshape(4, 4).T
    g = pygltflib.GLTF2.load_binary(str(out / doc["root"]["content"]["uri"]))
    blob = g.binary_blob()
    prim = g.meshes[0].primitives[0]
    pos = accessor(g, blob, prim.attributes.POSITION).astype(np.float64)
    enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])  # glTF y-up -> z-up
    ecef = (world @ np.c_[enu, np.ones(len(enu))].T).T[:, :3]
    miss = float(np.linalg.norm(ecef[0] - want))
    print(f"root vertex {local} + SRSOrigin: {miss * 1000:.3f} mm from PROJ")
    assert miss < 0.01

    # every vertex of the root tile, as the reader read them, within a centimetre too
    (node,) = read_osgb(production() / ROOT_FILE).nodes
    every = np.concatenate([g.positions for g in node.geometries]) + origin
    assert np.allclose(every[0], local + origin)
    proj_all = np.column_stack(proj.transform(every[:, 0], every[:, 1], every[:, 2]))
    worst = float(np.linalg.norm(ecef - proj_all, axis=1).max())
    print(f"all {len(every)} root vertices: at most {worst * 1000:.3f} mm from PROJ")
    assert worst < 0.01

    # the label's definition would have put it tens of kilometres away
    labelled = Transformer.from_crs(CRS("EPSG:4547+5773"), CRS("EPSG:4978"), always_xy=True)
    assert np.linalg.norm(np.array(labelled.transform(*(local + origin))) - want) > 60_000


def test_textures_are_the_original_jpeg_bytes(built) -> None:
    out, _, _, _ = built
    doc = json.loads((out / "tileset.json").read_text())
    g = pygltflib.GLTF2.load_binary(str(out / doc["root"]["content"]["uri"]))
    blob = g.binary_blob()
    (image,) = g.images
    view = g.bufferViews[image.bufferView]
    data = blob[view.byteOffset : view.byteOffset + view.byteLength]
    assert image.mimeType == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    assert data in (production() / ROOT_FILE).read_bytes()  # as stored, not re-encoded
    prim = g.meshes[0].primitives[0]
    assert prim.attributes.TEXCOORD_0 is not None
    assert g.materials[prim.material].pbrMetallicRoughness.baseColorTexture.index == 0


def test_a_truncated_osgb_is_an_error_naming_it(tmp_path: Path) -> None:
    copy = tmp_path / "production"
    shutil.copytree(production(), copy)
    broken = copy / "Data" / "Tile_+000_+012" / "Tile_+000_+012_L16_0uu.osgb"
    broken.chmod(0o644)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    meta = read_metadata(copy / "metadata.xml")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OsgbError, match=re.escape(str(broken))):
        PyramidWriter(copy, ToStorage(meta.srs, meta.origin, None), out, Report()).build(
            production_roots(copy), {}
        )


def test_several_tile_folders_hang_under_one_root(tmp_path: Path) -> None:
    """A production of two tile folders (the sample's folder copied; the same place, which
    does not matter here): one root without content over both pyramids, still valid."""
    copy = tmp_path / "production"
    shutil.copytree(production(), copy)
    second = copy / "Data" / "Tile_+001_+012"
    shutil.copytree(copy / "Data" / "Tile_+000_+012", second)
    (second / "Tile_+000_+012.osgb").rename(second / "Tile_+001_+012.osgb")
    assert [p.parent.name for p in production_roots(copy)] == ["Tile_+000_+012", "Tile_+001_+012"]
    meta = read_metadata(copy / "metadata.xml")
    out = tmp_path / "out"
    out.mkdir()
    result = PyramidWriter(copy, ToStorage(meta.srs, meta.origin, None), out, Report()).build(
        production_roots(copy), {}
    )
    assert len(result.records) == 80 and result.files_read == 18
    validate(out / "tileset.json")
    doc = json.loads((out / "tileset.json").read_text())
    root = doc["root"]
    assert "content" not in root and len(root["children"]) == 2
    assert [c["geometricError"] for c in root["children"]] == pytest.approx([64.0, 64.0])
    assert root["geometricError"] >= 64.0 and doc["geometricError"] >= root["geometricError"]
