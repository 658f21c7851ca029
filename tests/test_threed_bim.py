"""A BIM model's 3D tileset (``build-3d --layers bim``) from a real IFC file: one tileset per
model, valid 3D Tiles 1.1, one feature per element with the ``bim_elements`` ids and the
element's GUID, class and storey, every vertex where PROJ puts the stored one, and the
building's LOD1 solid giving way to the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pygltflib
import pytest
import shapely
from pyproj import CRS, Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.runner import run_import
from cimtwin.tiles.cli import expand_families
from cimtwin.tiles.threed.build import build_tileset
from tests.shared_data import IFC, needs_ifc
from tests.threed_check import validate
from tests.threed_read import feature_vertices_ecef, table_column, walk_tiles

DUPLEX_GEO = IFC / "Duplex_A_20110907_georeferenced.ifc"
GRIDS = Path("/usr/share/proj")
pytestmark = needs_ifc


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def bim_db(scratch_database: str) -> str:
    """The georeferenced Duplex placed by --origin at the North Station, turned 30 degrees."""
    from cimtwin.importers.ifc.importer import IfcImporter

    result = run_import(
        IfcImporter(),
        [DUPLEX_GEO],
        ImportOptions(origin="114.0239,22.6080,5", rotation=30.0, dataset="duplex-ns"),
        scratch_database,
    )
    assert result.status == "succeeded", result
    return scratch_database


def tile_features(folder: Path, only: tuple[str, ...] | None = None) -> list[dict]:
    """Every feature row of every tile: its id and properties (or ``only`` those), decoded
    from the glb."""
    doc = json.loads((folder / "tileset.json").read_text())
    tiles: list = []
    walk_tiles(doc["root"], np.eye(4), tiles)
    out = []
    kinds = {"id": "UINT32", "storey_elevation": "FLOAT64"}
    for tile, _ in tiles:
        uri = tile.get("content", {}).get("uri")
        if not uri:
            continue
        g = pygltflib.GLTF2.load_binary(str(folder / uri))
        table = g.extensions["EXT_structural_metadata"]["propertyTables"][0]
        columns = {
            name: table_column(g, g.binary_blob(), col, kinds.get(name, "STRING"))
            for name, col in table["properties"].items()
            if only is None or name in only
        }
        for i in range(table["count"]):
            out.append({name: values[i] for name, values in columns.items()} | {"tile": uri})
    return out


def test_one_valid_tileset_per_model_with_element_ids_and_placement(
    bim_db: str, tmp_path: Path
) -> None:
    targets = expand_families(["bim"], bim_db, tmp_path)
    assert len(targets) == 1, targets
    ((tileset_id, target),) = targets.items()
    assert tileset_id.startswith("bim-duplex_ns-"), tileset_id  # --dataset names the model
    result = build_tileset(tileset_id, tmp_path, database_url=bim_db, target=target, workers=1)
    folder = tmp_path / tileset_id
    assert result.path == folder / "tileset.json"
    validate(result.path)
    doc = json.loads(result.path.read_text())
    assert doc["asset"]["version"] == "1.1"
    extras = doc["asset"]["extras"]
    assert extras["layer"] == "bim_elements" and extras["id"] == tileset_id
    ((name, code),) = rows(
        bim_db,
        "SELECT b.name, b.building_code FROM cim.bim_model m JOIN cim.building b "
        "ON b.id = m.building_id",
    )
    assert extras["title"] == " ".join(["BIM", *(v for v in (name, code) if v), "· duplex-ns"])

    # every drawn element once at full detail (leaves), with its id, GUID, class and storey
    stored = {
        r[0]: r[1:]
        for r in rows(
            bim_db,
            "SELECT id, ifc_guid, ifc_class, storey FROM cim.bim_element "
            "WHERE geom IS NOT NULL AND ifc_class NOT IN ('IfcSpace', 'IfcOpeningElement')",
        )
    }
    features = tile_features(folder)
    leaves = [f for f in features if not _has_children(doc, f["tile"])]
    assert sorted(f["id"] for f in leaves) == sorted(stored)
    for f in features:
        assert (f["guid"], f["ifc_class"], f["storey"]) == stored[f["id"]], f
    assert not [f for f in features if f["ifc_class"] == "IfcSpace"]
    # a known GUID (the first door by GUID) is feature id = its bim_elements id
    ((door_id, door_guid),) = rows(
        bim_db,
        "SELECT id, ifc_guid FROM cim.bim_element WHERE ifc_class = 'IfcDoor' "
        "ORDER BY ifc_guid LIMIT 1",
    )
    assert {f["guid"] for f in features if f["id"] == door_id} == {door_guid}

    # the door's stored vertex, through the tileset's transforms, where PROJ puts it
    ((points,),) = rows(
        bim_db, "SELECT ST_AsBinary(ST_Points(geom)) FROM cim.bim_element WHERE id = %s", (door_id,)
    )
    vertex = shapely.get_coordinates(shapely.from_wkb(bytes(points)), include_z=True)[0]
    if (GRIDS / "egm96_15.gtx").is_file():
        import pyproj

        pyproj.datadir.append_data_dir(str(GRIDS))
    proj = Transformer.from_crs(CRS("EPSG:4547+5773"), CRS("EPSG:4978"), always_xy=True)
    want = np.array(proj.transform(*vertex))
    miss = np.linalg.norm(feature_vertices_ecef(folder, door_id) - want, axis=1).min()
    print(f"BIM control point: {miss * 1000:.2f} mm from PROJ")
    assert miss < 0.01, f"the door's vertex is {miss * 100:.2f} cm from PROJ's answer"


def _has_children(doc: dict, uri: str) -> bool:
    found: list[bool] = []

    def walk(tile: dict) -> None:
        if tile.get("content", {}).get("uri") == uri:
            found.append(bool(tile.get("children")))
        for child in tile.get("children", []):
            walk(child)

    walk(doc["root"])
    return found[0]


def test_the_buildings_lod1_solid_gives_way_to_its_model(bim_db: str, tmp_path: Path) -> None:
    ((model_id, building_id),) = rows(bim_db, "SELECT id, building_id FROM cim.bim_model")
    assert building_id is not None
    # the model's building is drawn by the model only
    assert build_tileset("buildings", tmp_path, database_url=bim_db, workers=1).path is None
    link = "UPDATE cim.bim_model SET building_id = %s WHERE id = %s"
    with psycopg.connect(libpq_dsn(bim_db), autocommit=True) as conn:
        conn.execute(link, (None, model_id))
        try:
            # without the link the LOD1 solid is back (the model's footprint, its height)
            result = build_tileset("buildings", tmp_path, database_url=bim_db, workers=1)
        finally:
            conn.execute(link, (building_id, model_id))
    assert result.path is not None
    features = tile_features(tmp_path / "buildings", only=("id",))
    assert [f["id"] for f in features] == [building_id]


def test_a_deleted_models_tileset_folder_goes(bim_db: str, tmp_path: Path) -> None:
    gone = tmp_path / "bim-old_model-abcdef"
    gone.mkdir()
    (gone / "build.json").write_text("{}")
    (gone / "tileset.json").write_text("{}")
    other = tmp_path / "bim-hand_made"  # not written by a build: left alone
    other.mkdir()
    (other / "tileset.json").write_text("{}")
    targets = expand_families(["bim", "buildings"], bim_db, tmp_path)
    assert "buildings" in targets and len(targets) == 2
    assert not gone.exists() and other.exists()
