"""Buildings and underground structures as 3D solids: extrusion, level of detail with a
measured error, and the two sources against the committed North Station sample.

Oracles are independent of the code under test: shapely (areas, hulls, Hausdorff distances),
the divergence theorem (a closed, outward-facing mesh has a positive volume equal to area x
height), the shipped land-use dictionary read with csv, and PostGIS through plain SQL.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import psycopg
import pytest
import shapely

from cimtwin.db.engine import libpq_dsn
from cimtwin.tiles.threed.extrusion import Part, Solid, choose, extrude, polygons, simplified
from cimtwin.tiles.threed.mesh import Mesh
from cimtwin.tiles.threed.sources.buildings import BuildingsSource
from cimtwin.tiles.threed.sources.underground import UndergroundSource

ROOT = Path(__file__).resolve().parents[1]
#: the buildings the LOD1 tileset draws: every one with a base, less those a BIM model draws
#: (the sample's 天悦广场)
DRAWN = (
    "cim.building b WHERE base_elevation_m IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM cim.bim_model m WHERE m.building_id = b.id)"
)
BIM_BUILDING = "JZ4403090000180"


def signed_volume(pos: np.ndarray, tri: np.ndarray) -> float:
    """Divergence theorem: positive and equal to the solid's volume when closed and outward."""
    a, b, c = pos[tri[:, 0]], pos[tri[:, 1]], pos[tri[:, 2]]
    origin = pos.mean(axis=0)
    a, b, c = a - origin, b - origin, c - origin
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def edge_balance(pos: np.ndarray, tri: np.ndarray) -> dict:
    """Directed edges by rounded coordinates: a closed oriented surface uses each edge once in
    each direction, so every count is 0 (a -> b adds 1, b -> a takes 1)."""
    key = [tuple(np.round(p, 6)) for p in pos]
    bal: dict = {}
    for t in tri:
        for i, j in ((0, 1), (1, 2), (2, 0)):
            a, b = key[t[i]], key[t[j]]
            k = (a, b) if a < b else (b, a)
            bal[k] = bal.get(k, 0) + (1 if a < b else -1)
    return {k: v for k, v in bal.items() if v}


def normals(pos: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c = pos[tri[:, 0]], pos[tri[:, 1]], pos[tri[:, 2]]
    return np.cross(b - a, c - a), (a + b + c) / 3.0


def roof_outline(pos: np.ndarray, tri: np.ndarray, z: float) -> shapely.Geometry:
    """The union of the horizontal triangles at height z, in plan."""
    n, _ = normals(pos, tri)
    flat = [
        shapely.Polygon(pos[t, :2])
        for t, nv in zip(tri, n, strict=True)
        if abs(pos[t, 2] - z).max() < 1e-6 and nv[2] > 0
    ]
    return shapely.union_all(flat)


# ---------------------------------------------------------------------------------------------
# extrusion without a database


def test_prism_with_hole_is_closed_outward_and_its_roof_is_the_footprint() -> None:
    poly = shapely.Polygon(
        [(0, 0), (30, 0), (30, 20), (12, 26), (0, 20)], [[(5, 5), (5, 10), (10, 10), (10, 5)]]
    )
    pos, tri = extrude(poly, 70.0, 95.5, roof=True, floor=True)
    assert edge_balance(pos, tri) == {}
    assert signed_volume(pos, tri) == pytest.approx(poly.area * 25.5, rel=1e-9)
    roof = roof_outline(pos, tri, 95.5)
    assert roof.symmetric_difference(poly).area < 1e-6
    assert pos[:, 2].min() == 70.0 and pos[:, 2].max() == 95.5


def test_convex_prism_normals_point_away_from_its_centroid() -> None:
    angles = np.linspace(0, 2 * np.pi, 7)[:-1] + 0.3
    hexagon = shapely.Polygon(np.c_[500000 + 15 * np.cos(angles), 2500000 + 15 * np.sin(angles)])
    hexagon = shapely.Polygon(list(hexagon.exterior.coords)[::-1])  # clockwise on purpose
    pos, tri = extrude(hexagon, 10.0, 40.0, floor=True)
    n, centre = normals(pos, tri)
    inside = np.r_[hexagon.centroid.x, hexagon.centroid.y, 25.0]
    assert len(tri) == 6 * 2 + 4 + 4
    assert (np.einsum("ij,ij->i", n, centre - inside) > 0).all()


def test_walls_and_roof_have_their_own_vertices() -> None:
    pos, tri = extrude(shapely.box(0, 0, 10, 10), 0.0, 5.0)
    n, _ = normals(pos, tri)
    unit = n / np.linalg.norm(n, axis=1)[:, None]
    for v in range(len(pos)):  # every vertex is used by faces of one orientation only
        used = unit[(tri == v).any(axis=1)]
        assert np.allclose(used, used[0])


def test_invalid_and_multi_footprints_are_repaired() -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bowtie.is_valid
    parts = polygons(bowtie)
    assert all(p.is_valid and p.exterior.is_ccw for p in parts)
    assert sum(p.area for p in parts) == pytest.approx(shapely.make_valid(bowtie).area)
    multi = shapely.MultiPolygon([shapely.box(0, 0, 5, 5), shapely.box(10, 0, 12, 3)])
    pos, tri = extrude(multi, 0.0, 3.0, floor=True)
    assert signed_volume(pos, tri) == pytest.approx(multi.area * 3.0)
    assert edge_balance(pos, tri) == {}
    spike = shapely.Polygon([(0, 0), (4, 0), (4, 4), (4, 4.0), (0, 4), (0, 0), (0, 0)])
    assert signed_volume(*extrude(spike, 0.0, 1.0, floor=True)) == pytest.approx(16.0)
    assert extrude(shapely.Polygon(), 0.0, 1.0)[1].shape == (0, 3)
    assert extrude(shapely.box(0, 0, 1, 1), 1.0, 1.0)[1].shape == (0, 3)


def test_simplification_error_is_at_least_the_true_hausdorff_distance() -> None:
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = 40 + 3 * np.sin(9 * t)
    star = shapely.Polygon(np.c_[r * np.cos(t), r * np.sin(t)])
    for tol in (0.5, 2.0, 6.0):
        shown, error = simplified(star, tol)
        assert shapely.get_num_coordinates(shown) < shapely.get_num_coordinates(star)
        truth = shapely.hausdorff_distance(shown, star, densify=0.01)
        assert error >= truth - 1e-9 and error > 0
    rect, rect_error = simplified(shapely.box(0, 0, 20, 30), 10.0)  # a box stays a box
    assert rect_error == 0.0 and rect.symmetric_difference(shapely.box(0, 0, 20, 30)).area == 0


def test_choose_drops_small_solids_keeps_a_budget_and_measures_what_is_missing() -> None:
    colour = (1, 2, 3, 255)
    solids = [
        Solid(shapely.box(0, 0, 2, 2), [Part(0.0, 3.0, colour)]),  # 3 m tall, 2.8 m wide
        Solid(shapely.box(10, 0, 40, 20), [Part(0.0, 12.0, colour)]),
        Solid(shapely.box(50, 0, 52, 2), [Part(0.0, 60.0, colour)]),  # slim but 60 m tall
        Solid(shapely.box(60, 0, 90, 30), [Part(-6.0, 0.0, colour), Part(0.0, 30.0, colour)]),
    ]
    full = choose(solids, 0.0, 2)
    assert full.kept == [0, 1, 2, 3] and full.error_m == 0.0
    far = choose(solids, 10.0, 10)
    assert far.kept == [1, 2, 3]
    assert far.error_m == pytest.approx(max(math.hypot(2, 2), 3.0))
    budget = choose(solids, 1.0, 2)
    assert budget.kept == [2, 3]  # the two largest (60 m tall, 42 m wide)
    missing = max(math.hypot(30, 20), 12.0)
    assert budget.error_m == pytest.approx(missing)
    assert choose(solids, 1000.0, 5).kept == [2]  # never empty: the largest (60 m) stays


# ---------------------------------------------------------------------------------------------
# the sources against the sample


@pytest.fixture(scope="module")
def conn(database_url: str, loaded_sample):
    with psycopg.connect(libpq_dsn(database_url)) as c:
        yield c


def feature_part(mesh: Mesh, row: int) -> tuple[np.ndarray, np.ndarray]:
    """The vertices and triangles of one feature of a tile's mesh."""
    tri = mesh.triangles[(mesh.features[mesh.triangles] == row).all(axis=1)]
    used, inverse = np.unique(tri, return_inverse=True)
    return mesh.positions[used], inverse.reshape(-1, 3)


def landuse_rgb(code: str) -> tuple[int, int, int]:
    with open(ROOT / "cimtwin/reference/land_use_gb50137.csv", encoding="utf-8") as fh:
        hexes = {r["code"]: r["color_hex"] for r in csv.DictReader(fh)}
    h = hexes[code].lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def test_a_known_building_in_its_tile(conn) -> None:
    row = conn.execute(
        """SELECT id, building_code, name, use, height_m, floors, underground_floors,
                  base_elevation_m, grid_code, ST_AsText(footprint),
                  ST_X(ST_PointOnSurface(footprint)), ST_Y(ST_PointOnSurface(footprint))
           FROM cim.building WHERE use = 'residential' AND underground_floors > 0
           ORDER BY id LIMIT 1"""
    ).fetchone()
    assert row is not None
    bid, code, name, use, height, floors, ug, base, grid, wkt, ax, ay = row
    src = BuildingsSource()
    content = src.content(conn, (ax - 0.5, ay - 0.5, ax + 0.5, ay + 0.5), 0.0)
    assert content is not None and content.error_m == 0.0
    ft = content.features
    assert bid in ft.ids.tolist()
    i = ft.ids.tolist().index(bid)
    props = {p.name: p.values[i] for p in ft.properties}
    assert props["code"] == code and props["name"] == name and props["use"] == use
    assert props["height"] == height and props["floors"] == floors and props["grid"] == grid
    assert props["underground_floors"] == ug

    pos, tri = feature_part(content.mesh, i)
    footprint = shapely.from_wkt(wkt)
    storey = min(max(height / floors, 3.0), 5.0)
    assert pos[:, 2].max() == pytest.approx(base + height, abs=1e-9)
    assert pos[:, 2].min() == pytest.approx(base - ug * storey, abs=1e-9)
    hull = shapely.MultiPoint(pos[:, :2]).convex_hull
    assert shapely.hausdorff_distance(hull, footprint.convex_hull) < 1e-3
    # one closed outward solid (above-ground prism on its underground floors)
    assert signed_volume(pos, tri) == pytest.approx(footprint.area * (height + ug * storey))
    n, centre = normals(pos, tri)
    inside = np.r_[footprint.centroid.x, footprint.centroid.y, base + (height - ug * storey) / 2]
    assert (np.einsum("ij,ij->i", n, centre - inside) > 0).all()
    # colours: the residential land-use colour above ground, darker below
    vert_rows = np.unique(tri)
    above = pos[:, 2] > base + 1e-6
    colours = content.mesh.colors[
        np.unique(
            content.mesh.triangles[(content.mesh.features[content.mesh.triangles] == i).all(axis=1)]
        )
    ]
    assert len(vert_rows) == len(colours)
    assert {tuple(c[:3]) for c in colours[above]} == {landuse_rgb("R")}
    below = colours[pos[:, 2] < base - 1e-6]
    assert len(below) and (below[:, :3].astype(int).sum(axis=1) < sum(landuse_rgb("R"))).all()


def quarters(box: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return [(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)]


@pytest.mark.parametrize("source", [BuildingsSource(), UndergroundSource()], ids=lambda s: s.id)
def test_each_feature_is_in_exactly_one_leaf(conn, source) -> None:
    b = source.bounds(conn)
    assert b is not None
    root = (b.box[0], b.box[1], b.box[2] + 1.0, b.box[3] + 1.0)
    table = DRAWN if source.id == "buildings" else "cim.underground_structure"
    total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert source.count(conn, root) == total > 0
    # split on the sample's middle (a box edge through the station's anchors too)
    seen: list[int] = []
    counts = 0
    for q in quarters(root):
        counts += source.count(conn, q)
        c = source.content(conn, q, 0.0)
        if c is not None:
            seen.extend(c.features.ids.tolist())
    assert counts == total
    assert sorted(seen) == sorted(set(seen)) and len(seen) == total


def test_far_view_reports_what_it_leaves_out(conn) -> None:
    src = BuildingsSource()
    b = src.bounds(conn)
    assert b is not None
    root = (b.box[0], b.box[1], b.box[2] + 1.0, b.box[3] + 1.0)
    full = src.content(conn, root, 0.0)
    assert full is not None and full.error_m == 0.0
    tol = 60.0
    far = src.content(conn, root, tol)
    assert far is not None
    assert 0 < len(far.features) < len(full.features)
    assert len(far.mesh.triangles) < len(full.mesh.triangles)
    kept = set(far.features.ids.tolist())
    truth = 0.0
    for bid, wkt, height in conn.execute(f"SELECT id, ST_AsText(footprint), height_m FROM {DRAWN}"):
        fp = shapely.from_wkt(wkt)
        if bid in kept:
            i = far.features.ids.tolist().index(bid)
            pos, tri = feature_part(far.mesh, i)
            shown = roof_outline(pos, tri, float(pos[:, 2].max()))
            truth = max(truth, shapely.hausdorff_distance(shown, fp, densify=0.05))
        else:  # missing entirely: at least its width or its height away
            width = 2 * shapely.minimum_bounding_radius(fp)
            truth = max(truth, width, height)
    assert far.error_m >= truth - 1e-9
    assert far.error_m > 0


def test_a_parent_stays_bounded(conn) -> None:
    src = BuildingsSource()
    src.max_features_per_tile = 12
    b = src.bounds(conn)
    assert b is not None
    root = (b.box[0], b.box[1], b.box[2] + 1.0, b.box[3] + 1.0)
    far = src.content(conn, root, 0.5)
    assert far is not None and len(far.features) == 12
    heights = conn.execute(
        "SELECT max(height_m) FROM cim.building WHERE base_elevation_m IS NOT NULL"
    ).fetchone()[0]
    assert far.error_m > 0 and far.error_m <= max(heights, 2000.0)
    # the parent reads only the budget + 1 largest rows (sizes ranked in SQL); the choice and
    # its error are those of the rule applied to every building of the box
    every = src.rows(conn, root)
    assert len(every) > 13
    whole = choose([r.solid() for r in every], 0.5, 12)
    assert sorted(far.features.ids.tolist()) == sorted(every[i].id for i in whole.kept)
    assert far.error_m == pytest.approx(whole.error_m)


def test_underground_structures_are_closed_volumes(conn) -> None:
    rows = conn.execute(
        """SELECT id, code, kind, name, top_elevation_m, bottom_elevation_m, ST_AsText(footprint),
                  ST_X(ST_PointOnSurface(footprint)), ST_Y(ST_PointOnSurface(footprint))
           FROM cim.underground_structure ORDER BY id"""
    ).fetchall()
    assert {r[2] for r in rows} >= {"metro_station", "metro_tunnel"}
    src = UndergroundSource()
    for uid, code, kind, name, top, bottom, wkt, ax, ay in rows:
        c = src.content(conn, (ax - 0.01, ay - 0.01, ax + 0.01, ay + 0.01), 0.0)
        assert c is not None
        ids = c.features.ids.tolist()
        assert uid in ids
        i = ids.index(uid)
        props = {p.name: p.values[i] for p in c.features.properties}
        assert (props["code"], props["kind"], props["name"]) == (code, kind, name)
        pos, tri = feature_part(c.mesh, i)
        fp = shapely.from_wkt(wkt)
        assert pos[:, 2].min() == bottom and pos[:, 2].max() == top
        # two shells over the same surface: one facing out, one facing in (seen from inside)
        n, centre = normals(pos, tri)
        inside = np.r_[fp.centroid.x, fp.centroid.y, (top + bottom) / 2]
        outward = np.einsum("ij,ij->i", n, centre - inside) > 0
        assert outward.sum() == (~outward).sum() > 0
        for shell, sign in ((tri[outward], 1.0), (tri[~outward], -1.0)):
            assert edge_balance(pos, shell) == {}
            assert signed_volume(pos, shell) == pytest.approx(sign * fp.area * (top - bottom))
        # no vertex is shared between the shells (the writer's normals would cancel)
        assert not set(np.unique(tri[outward])) & set(np.unique(tri[~outward]))
        assert roof_outline(pos, tri[outward], top).symmetric_difference(fp).area < 1e-3


# ---------------------------------------------------------------------------------------------
# end to end through the core's build and the 3D Tiles validator


class SmallTileBuildings(BuildingsSource):
    """The sample's 255 buildings fit one leaf; 40 a tile makes a tree with parents."""

    max_features_per_tile = 40


def glb_table(path: Path, column: str) -> dict[int, str]:
    """id -> a string property, read from a glb's EXT_structural_metadata table (pygltflib)."""
    import pygltflib

    g = pygltflib.GLTF2.load_binary(str(path))
    blob = g.binary_blob()
    props = g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]

    def view(i: int) -> bytes:
        v = g.bufferViews[i]
        return blob[v.byteOffset : v.byteOffset + v.byteLength]

    ids = np.frombuffer(view(props["id"]["values"]), "<u4").tolist()
    raw = view(props[column]["values"])
    offs = np.frombuffer(view(props[column]["stringOffsets"]), "<u4")
    strings = [raw[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]
    return dict(zip(ids, strings, strict=True))


def _tiles(tile: dict) -> list[dict]:
    return [tile, *(t for c in tile.get("children", []) for t in _tiles(c))]


@pytest.mark.parametrize(
    ("tileset_id", "target"),
    [
        ("buildings", None),
        ("underground", None),
        ("buildings", "tests.test_threed_buildings:SmallTileBuildings"),
    ],
    ids=["buildings", "underground", "buildings-tree"],
)
def test_the_sample_tilesets_validate(database_url, loaded_sample, tmp_path, tileset_id, target):
    import json

    from cimtwin.tiles.threed.build import build_tileset
    from cimtwin.tiles.threed.placement import Placement
    from cimtwin.tiles.threed.registry import available
    from tests.threed_check import validate

    assert tileset_id in available()
    result = build_tileset(
        tileset_id,
        tmp_path,
        database_url=database_url,
        target=target,
        workers=1,
        placement=Placement(geoid="egm96_15.gtx", height_offset_m=0.0),
    )
    assert result.path is not None
    validate(result.path)
    doc = json.loads(result.path.read_text())
    manifest = json.loads((tmp_path / tileset_id / "build.json").read_text())
    tiles = _tiles(doc["root"])
    leaves = [t for t in tiles if not t.get("children")]
    table = DRAWN if tileset_id == "buildings" else "cim.underground_structure"
    with psycopg.connect(libpq_dsn(database_url)) as c:
        total = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if tileset_id == "buildings":  # the sample's one BIM building is the one left out
            left_out = c.execute(
                f"SELECT building_code FROM cim.building EXCEPT SELECT building_code FROM {table}"
            ).fetchall()
            assert left_out == [(BIM_BUILDING,)]
    keys = [t["content"]["uri"].removeprefix("tiles/").removesuffix(".glb") for t in leaves]
    assert sum(manifest["tiles"][k]["features"] for k in keys) == total
    # picking: every leaf glb's property table, decoded with pygltflib, names its features by
    # their OGC ids, with their codes
    code_col = "building_code" if tileset_id == "buildings" else "code"
    with psycopg.connect(libpq_dsn(database_url)) as c:
        codes = dict(c.execute(f"SELECT id, {code_col} FROM {table}").fetchall())
    decoded: dict[int, str] = {}
    for leaf in leaves:
        decoded.update(glb_table(tmp_path / tileset_id / leaf["content"]["uri"], "code"))
    assert decoded == codes
    if target is not None:  # parents: fewer features than below them, a measured error
        parents = [t for t in tiles if t.get("children") and "content" in t]
        assert parents
        for p in parents:
            assert p["geometricError"] > 0
        assert max(manifest["tiles"][k]["features"] for k in keys) <= 40


@pytest.mark.parametrize("source", [BuildingsSource(), UndergroundSource()], ids=lambda s: s.id)
def test_feature_ids_are_the_ogc_api_ids(conn, client, source) -> None:
    b = source.bounds(conn)
    assert b is not None
    content = source.content(conn, (b.box[0], b.box[1], b.box[2] + 1.0, b.box[3] + 1.0), 0.0)
    assert content is not None
    code_prop = {"buildings": "building_code", "underground": "code"}[source.id]
    codes = next(p for p in content.features.properties if p.name == "code").values
    for fid, code in list(zip(content.features.ids.tolist(), codes, strict=True))[:5]:
        r = client.get(f"/collections/{source.layer}/items/{fid}")
        assert r.status_code == 200
        assert r.json()["id"] == fid and r.json()["properties"][code_prop] == code


def test_far_view_of_a_detailed_footprint_measures_its_simplification(conn) -> None:
    """A 120-vertex building (inserted in a transaction rolled back afterwards): the parent
    shows it simplified and reports at least the Hausdorff distance shapely measures."""
    x, y = conn.execute(
        "SELECT ST_XMax(ST_Extent(footprint)) + 500, ST_YMin(ST_Extent(footprint))"
        " FROM cim.building"
    ).fetchone()
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    r = 50 + 4 * np.sin(7 * t)
    star = shapely.Polygon(np.c_[x + r * np.cos(t), y + r * np.sin(t)])
    try:
        bid = conn.execute(
            """INSERT INTO cim.building (building_code, use, height_m, floors, underground_floors,
                                         base_elevation_m, county_code, footprint)
               VALUES ('TEST-STAR', 'office', 30, 8, 0, 70, '440309',
                       ST_Multi(ST_GeomFromText(%s, 4547))) RETURNING id""",
            (star.wkt,),
        ).fetchone()[0]
        box = (x - 100, y - 100, x + 100, y + 100)
        src = BuildingsSource()
        full = src.content(conn, box, 0.0)
        assert full is not None and full.features.ids.tolist() == [bid]
        assert full.error_m == 0.0
        pos, tri = feature_part(full.mesh, 0)
        assert roof_outline(pos, tri, 100.0).symmetric_difference(star).area < 1e-3
        for tol in (1.0, 3.0):
            far = src.content(conn, box, tol)
            assert far is not None and far.features.ids.tolist() == [bid]
            pos, tri = feature_part(far.mesh, 0)
            assert len(tri) < len(feature_part(full.mesh, 0)[1])
            shown = roof_outline(pos, tri, 100.0)
            truth = shapely.hausdorff_distance(shown, star, densify=0.01)
            assert truth > 0 and far.error_m >= truth - 1e-6
            assert pos[:, 2].min() == 70.0 and pos[:, 2].max() == 100.0  # heights kept
    finally:
        conn.rollback()
