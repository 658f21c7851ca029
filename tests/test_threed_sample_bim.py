"""The North Station sample's own BIM model (bim/JZ4403090000180.ifc) as 3D Tiles: the
session build of the twin's tilesets (conftest ``twin_tiles``) holds its tileset, valid, one
feature per drawn element of the IFC file, each with its GUID, and on its building's footprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pygltflib
import shapely
from pyproj import CRS, Transformer

from tests.conftest import SAMPLE, SAMPLE_BIM_DATASET, SAMPLE_BIM_TILESET, q
from tests.threed_check import validate
from tests.threed_read import feature_vertices_ecef, table_column, walk_tiles

IFC = SAMPLE / "bim" / "JZ4403090000180.ifc"


def leaf_features(folder: Path) -> dict[int, str]:
    """Feature id -> GUID of every leaf tile's features, decoded from the glb."""
    doc = json.loads((folder / "tileset.json").read_text())
    tiles: list = []
    walk_tiles(doc["root"], np.eye(4), tiles)
    out: dict[int, str] = {}
    for tile, _ in tiles:
        uri = tile.get("content", {}).get("uri")
        if not uri or tile.get("children"):
            continue
        g = pygltflib.GLTF2.load_binary(str(folder / uri))
        props = g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]
        ids = table_column(g, g.binary_blob(), props["id"], "UINT32")
        guids = table_column(g, g.binary_blob(), props["guid"], "STRING")
        for i, guid in zip(ids, guids, strict=True):
            assert out.setdefault(int(i), guid) == guid
    return out


def test_the_sample_model_tileset(twin_tiles: Path, engine) -> None:
    import ifcopenshell

    from cimtwin.tiles.threed.sources.bim import tileset_id

    ((name, dataset, building),) = q(
        engine,
        "SELECT m.name, m.dataset, b.building_code FROM cim.bim_model m "
        "JOIN cim.building b ON b.id = m.building_id",
    )
    assert dataset == SAMPLE_BIM_DATASET and building == IFC.stem
    assert tileset_id(name, dataset) == SAMPLE_BIM_TILESET
    folder = twin_tiles / SAMPLE_BIM_TILESET
    validate(folder / "tileset.json")
    doc = json.loads((folder / "tileset.json").read_text())
    assert doc["asset"]["extras"]["layer"] == "bim_elements"
    # one feature per element the file draws (rooms are not drawn): 291 of its 346
    model = ifcopenshell.open(str(IFC))
    drawn = {
        p.GlobalId
        for p in model.by_type("IfcProduct")
        if p.Representation is not None and not p.is_a("IfcSpace")
    }
    features = leaf_features(folder)
    assert len(features) == len(drawn) == 291
    assert set(features.values()) == drawn
    stored = dict(
        q(engine, "SELECT id, ifc_guid FROM cim.bim_element WHERE ifc_class <> 'IfcSpace'")
    )
    assert features == stored
    # an exterior wall's vertices, back from ECEF, lie on the building's footprint edge
    (wall_id, footprint) = q(
        engine,
        "SELECT e.id, ST_AsText(b.footprint) FROM cim.bim_element e "
        "JOIN cim.building b ON b.id = e.building_id WHERE e.ifc_class = 'IfcWall' "
        "AND e.properties -> 'Pset_WallCommon' ->> 'IsExternal' = 'true' ORDER BY e.id LIMIT 1",
    )[0]
    ecef = feature_vertices_ecef(folder, wall_id)
    back = Transformer.from_crs(CRS("EPSG:4978"), CRS("EPSG:4547"), always_xy=True)
    x, y, _ = back.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    fp = shapely.from_wkt(footprint)
    points = shapely.points(np.c_[x, y])
    assert shapely.covers(fp.buffer(0.01), points).all()
    assert shapely.distance(fp.boundary, points).min() < 0.01  # the wall's outer face
