"""The control point: a corner of the Shenzhen North Station building's roof in the built
buildings tileset, put through the tileset's own transforms, lands where PROJ puts it.

The oracle is PROJ's own answer for the compound CRS EPSG:4547 + EGM96 height (EPSG:5773) to
EPSG:4978, which picks the geoid transformation from its database, independently of cimtwin's
placement code. The default CIMTWIN_HEIGHT_OFFSET_M is 0, so a 1985 height is taken as an
EGM96 height; ignoring the geoid would put the corner about 3 m too high, which this test
also shows it would catch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pygltflib
import pyproj
import pytest
import shapely
from pyproj import CRS, Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.tiles.threed.build import build_tileset
from tests.threed_check import validate
from tests.threed_read import accessor, table_column, walk_tiles

GRIDS = Path("/usr/share/proj")


def _roof_corner(database_url: str) -> tuple[int, np.ndarray]:
    """The station building's id and its first footprint corner at roof height (storage CRS,
    1985 height), straight from PostGIS."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        row = conn.execute(
            "SELECT id, ST_AsBinary(footprint), base_elevation_m + height_m FROM cim.building "
            "WHERE name = %s",
            ("深圳北站",),
        ).fetchone()
    assert row is not None, "the sample has the North Station building"
    ring = shapely.get_coordinates(shapely.from_wkb(bytes(row[1])).geoms[0].exterior)
    return int(row[0]), np.array([ring[0, 0], ring[0, 1], float(row[2])])


def _feature_vertices_ecef(folder: Path, feature_id: int) -> np.ndarray:
    """Every vertex of one feature in the tileset, through the composed tile transforms and
    glTF's y-up convention, in ECEF."""
    tileset = json.loads((folder / "tileset.json").read_text())
    tiles: list = []
    walk_tiles(tileset["root"], np.eye(4), tiles)
    found = []
    for tile, world in tiles:
        uri = tile.get("content", {}).get("uri")
        if not uri:
            continue
        g = pygltflib.GLTF2.load_binary(str(folder / uri))
        blob = g.binary_blob()
        table = g.extensions["EXT_structural_metadata"]["propertyTables"][0]
        ids = np.array(table_column(g, blob, table["properties"]["id"], "UINT32"))
        for mesh in g.meshes:
            for prim in mesh.primitives:
                pos = accessor(g, blob, prim.attributes.POSITION).astype(np.float64)
                fid_set = prim.extensions["EXT_mesh_features"]["featureIds"][0]
                rows = accessor(g, blob, prim.attributes._FEATURE_ID_0).astype(int)
                assert fid_set["attribute"] == 0
                mine = pos[ids[rows] == feature_id]
                if len(mine) == 0:
                    continue
                node = next(n for n in g.nodes if n.mesh == g.meshes.index(mesh))
                m = np.array(node.matrix).reshape(4, 4).T if node.matrix else np.eye(4)
                local = (m @ np.c_[mine, np.ones(len(mine))].T).T[:, :3]
                enu = np.column_stack([local[:, 0], -local[:, 2], local[:, 1]])  # y-up -> z-up
                found.append((world @ np.c_[enu, np.ones(len(enu))].T).T[:, :3])
    assert found, f"feature {feature_id} is in no tile"
    return np.concatenate(found)


@pytest.mark.skipif(not (GRIDS / "egm96_15.gtx").is_file(), reason="proj-data's EGM96 absent")
def test_station_roof_corner_is_within_a_centimetre_of_proj(
    loaded_sample, database_url: str, tmp_path: Path
) -> None:
    building, corner = _roof_corner(database_url)
    build_tileset("buildings", tmp_path, database_url=database_url, workers=1)
    validate(tmp_path / "buildings" / "tileset.json")
    ecef = _feature_vertices_ecef(tmp_path / "buildings", building)

    pyproj.datadir.append_data_dir(str(GRIDS))
    proj = Transformer.from_crs(CRS("EPSG:4547+5773"), CRS("EPSG:4978"), always_xy=True)
    want = np.array(proj.transform(*corner))
    miss = np.linalg.norm(ecef - want, axis=1).min()
    print(f"control point: {miss * 1000:.2f} mm from PROJ")
    assert miss < 0.01, f"the roof corner is {miss * 100:.2f} cm from PROJ's answer"

    # the same corner without the geoid (height taken as ellipsoidal): about 3 m off, which
    # the 1 cm bound above would have caught
    flat = Transformer.from_crs(CRS("EPSG:4547").to_3d(), CRS("EPSG:4978"), always_xy=True)
    no_geoid = np.array(flat.transform(*corner))
    assert 2.5 < np.linalg.norm(no_geoid - want) < 4.0
