"""3D pipelines, pipeline points and city components: shapes at their true size and depth,
each feature in one leaf with its properties, parents' errors at least what an independent
Hausdorff distance says, and the built tilesets valid.

Oracles: numpy distances to the stored centre lines (read back through SQL), shapely's
Hausdorff distance, SQL for depths, grounds and counts, the 3D Tiles validator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import shapely
from scipy.ndimage import map_coordinates

from cimtwin.db.engine import libpq_dsn
from cimtwin.tiles.threed import solids
from cimtwin.tiles.threed.sources.components import ComponentsSource
from cimtwin.tiles.threed.sources.pipeline_points import PipelinePointsSource
from cimtwin.tiles.threed.sources.pipelines import PipelinesSource

SAMPLE_DEM = Path(__file__).resolve().parents[1] / "data_samples" / "north_station" / "dem.tif"


# --- helpers (independent of the code under test) ------------------------------------------
def line_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points p (n, 3) to the infinite line through a and b."""
    d = (b - a) / np.linalg.norm(b - a)
    off = p - a
    return np.linalg.norm(off - np.outer(off @ d, d), axis=1)


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    t = np.clip(((p - a) @ d) / (d @ d), 0.0, 1.0)
    return np.linalg.norm(p - (a + np.outer(t, d)), axis=1)


def assert_closed(solid: solids.Solid) -> None:
    """Every edge is used once in each direction: a closed, consistently wound surface."""
    tri = solid.triangles
    # weld coincident vertices first (caps and box faces have their own copies)
    _, weld = np.unique(np.round(solid.positions, 9), axis=0, return_inverse=True)
    t = weld.reshape(-1)[tri]
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    edges = edges[edges[:, 0] != edges[:, 1]]
    fwd = {tuple(e) for e in edges.tolist()}
    assert len(fwd) == len(edges), "an edge is used twice in the same direction"
    assert all((b, a) in fwd for a, b in fwd), "an edge has no opposite: the surface is open"
    assert solid.signed_volume() > 0, "triangles face inwards"


def feature_vertices(content, feature_id: int) -> np.ndarray:
    row = int(np.flatnonzero(content.features.ids == feature_id)[0])
    return content.mesh.positions[content.mesh.features == row]


def prop(content, name: str, feature_id: int):
    row = int(np.flatnonzero(content.features.ids == feature_id)[0])
    return next(p for p in content.features.properties if p.name == name).values[row]


def around(x: float, y: float, half: float = 60.0) -> tuple[float, float, float, float]:
    return (x - half, y - half, x + half, y + half)


# --- shapes --------------------------------------------------------------------------------
def test_straight_tubes_sit_at_their_radius_and_close():
    rng = np.random.default_rng(7)
    a = rng.uniform(-50, 50, (20, 3))
    b = a + rng.uniform(-30, 30, (20, 3))
    b[0] = a[0] + [0, 0, 3.0]  # plumb: a well
    r = rng.uniform(0.05, 1.0, 20)
    sides = 8
    solid = solids.tubes(a, b, r, sides)
    for i in range(20):
        p = solid.positions[solid.item == i]
        np.testing.assert_allclose(line_distance(p, a[i], b[i]), r[i], atol=1e-9)
    # volume of an inscribed n-gon prism, per tube
    lengths = np.linalg.norm(b - a, axis=1)
    expected = (sides / 2 * r**2 * np.sin(2 * np.pi / sides) * lengths).sum()
    assert solid.signed_volume() == pytest.approx(expected, rel=1e-9)
    assert_closed(solids.tubes(a[:1], b[:1], r[:1], sides))


def test_bent_tube_is_mitred_at_the_radius_of_both_axes():
    pts = np.array([[0, 0, 0], [10, 0, 0.2], [15, 8, 0.4], [15, 20, 0.0]], float)
    radius = 0.3
    solid = solids.tube(pts, radius, 8)
    p = solid.positions
    lines = np.array([line_distance(p, pts[i], pts[i + 1]) for i in range(len(pts) - 1)])
    segs = np.min([segment_distance(p, pts[i], pts[i + 1]) for i in range(len(pts) - 1)], axis=0)
    # every vertex is the radius from some segment's axis, and no vertex cuts inside the tube
    assert np.min(np.abs(lines - radius), axis=0).max() < 1e-9
    assert segs.min() > radius - 1e-9
    assert_closed(solid)


def test_a_bend_turning_back_splits_the_tube():
    pts = np.array([[0, 0, 0], [10, 0, 0], [2, 1, 0]], float)  # turns back by 173 degrees
    solid = solids.tube(pts, 0.2, 6)
    p = solid.positions
    first = line_distance(p, pts[0], pts[1])
    second = line_distance(p, pts[1], pts[2])
    # no mitre (it would reach 8 radii out): each vertex belongs to one of two plain tubes
    assert np.minimum(np.abs(first - 0.2), np.abs(second - 0.2)).max() < 1e-9
    assert len(p) == 2 * len(solids.tubes(pts[:1], pts[1:2], np.array([0.2]), 6).positions)
    assert solid.signed_volume() > 0


def test_box_along_a_sloping_bent_line_keeps_width_across_and_height_plumb():
    pts = np.array([[0, 0, 10.0], [20, 0, 9.9], [30, 10, 9.85]])
    w, h = 2.0, 1.5
    solid = solids.box_along(pts, w, h)
    assert_closed(solid)
    # every vertex: half the height above or below the line at its station, and half the
    # width from the line's plan, on one side or the other
    plan = shapely.LineString(pts[:, :2])
    p = solid.positions
    where = shapely.points(p[:, :2])
    lateral = shapely.distance(where, plan)
    along = shapely.line_locate_point(plan, where)
    stations = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1))])
    z_line = np.interp(along, stations, pts[:, 2])
    straight = (p[:, 0] < 19) | (p[:, 0] > 21)  # away from the mitre, where width is exact
    np.testing.assert_allclose(lateral[straight], w / 2, atol=1e-3)
    np.testing.assert_allclose(np.abs(p[:, 2] - z_line)[straight], h / 2, atol=1e-3)


def test_straight_box_batch_matches_the_polyline_box():
    a = np.array([[0.0, 0.0, 5.0], [3.0, 4.0, 1.0]])
    b = np.array([[10.0, 2.0, 4.9], [3.0, -6.0, 0.8]])
    batch = solids.boxes_along(a, b, np.array([2.0, 0.6]), np.array([1.5, 0.4]))
    for i, (w, h) in enumerate([(2.0, 1.5), (0.6, 0.4)]):
        one = solids.box_along(np.stack([a[i], b[i]]), w, h)
        mine = batch.positions[batch.item == i]
        assert sorted(map(tuple, np.round(mine, 9))) == sorted(
            map(tuple, np.round(one.positions, 9))
        )
        part = solids.Solid(
            mine, batch.triangles[batch.item[batch.triangles[:, 0]] == i] - 24 * i, 0
        )
        part.item = np.zeros(len(mine), np.int64)
        assert_closed(part)
        assert part.signed_volume() == pytest.approx(
            w * h * np.linalg.norm((b[i] - a[i])[:2]), rel=1e-9
        )


def test_boxes_octahedra_and_slabs_are_closed():
    assert_closed(solids.boxes(np.array([[1.0, 2.0, 3.0]]), np.array([1.0, 2.0, 0.5])))
    assert_closed(solids.octahedra(np.array([[0.0, 0.0, 0.0]]), 0.4))
    ring = shapely.Polygon([(0, 0), (10, 0), (10, 6), (0, 6)], [[(2, 2), (4, 2), (4, 4), (2, 4)]])
    slab = solids.slab(ring, 5.0, 5.1)
    assert_closed(slab)
    assert slab.signed_volume() == pytest.approx(ring.area * 0.1, rel=1e-9)


# --- the sample ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conn(database_url, loaded_sample):
    with psycopg.connect(libpq_dsn(database_url)) as c:
        yield c


def test_a_pipe_is_in_the_leaf_holding_its_midpoint_at_its_radius(conn):
    row = conn.execute(
        "SELECT id, network, subtype, diameter_mm, material, owner, from_depth_m, to_depth_m,"
        " ST_X(m), ST_Y(m), ST_AsText(geom) FROM (SELECT *,"
        " ST_LineInterpolatePoint(ST_Force2D(geom), 0.5) AS m FROM cim.pipeline_segment"
        " WHERE diameter_mm IS NOT NULL AND material IS NOT NULL AND owner IS NOT NULL"
        " ORDER BY id OFFSET 17 LIMIT 1) s"
    ).fetchone()
    pid, network, subtype, diameter, material, owner, d_from, d_to, mx, my, wkt = row
    content = PipelinesSource().content(conn, around(mx, my), 0.0)
    assert pid in content.features.ids.tolist()
    assert prop(content, "network", pid) == network
    assert prop(content, "subtype", pid) == subtype
    assert prop(content, "size", pid) == f"DN{diameter:g}"
    assert prop(content, "material", pid) == material
    assert prop(content, "owner", pid) == owner
    assert prop(content, "from_depth_m", pid) == pytest.approx(d_from)
    assert prop(content, "to_depth_m", pid) == pytest.approx(d_to)
    line = shapely.get_coordinates(shapely.from_wkt(wkt), include_z=True)
    v = feature_vertices(content, pid)
    dist = np.min([line_distance(v, line[i], line[i + 1]) for i in range(len(line) - 1)], axis=0)
    np.testing.assert_allclose(dist, diameter / 2000.0, atol=1e-3)
    # and the tube is at the stored axis height (not shifted again): its middle is the line's
    assert (v[:, 2].min() + v[:, 2].max()) / 2 == pytest.approx(line[:, 2].mean(), abs=1e-3)


def test_a_box_section_has_its_width_and_height(conn):
    row = conn.execute(
        "SELECT id, width_mm, height_mm, ST_X(m), ST_Y(m), ST_AsText(geom) FROM (SELECT *,"
        " ST_LineInterpolatePoint(ST_Force2D(geom), 0.5) AS m FROM cim.pipeline_segment"
        " WHERE width_mm IS NOT NULL AND height_mm IS NOT NULL AND diameter_mm IS NULL"
        " AND ST_NPoints(geom) = 2 ORDER BY id LIMIT 1) s"
    ).fetchone()
    pid, w, h, mx, my, wkt = row
    content = PipelinesSource().content(conn, around(mx, my), 0.0)
    assert prop(content, "size", pid) == f"{w:g}X{h:g}"
    a, b = shapely.get_coordinates(shapely.from_wkt(wkt), include_z=True)
    v = feature_vertices(content, pid)
    d = (b - a)[:2] / np.linalg.norm((b - a)[:2])
    across = np.array([-d[1], d[0]])
    share = ((v[:, :2] - a[:2]) @ d) / np.linalg.norm((b - a)[:2])
    z_axis = a[2] + share * (b[2] - a[2])
    lateral = (v[:, :2] - a[:2]) @ across
    np.testing.assert_allclose(np.abs(lateral), w / 2000.0, atol=1e-3)
    np.testing.assert_allclose(np.abs(v[:, 2] - z_axis), h / 2000.0, atol=1e-3)
    assert lateral.max() - lateral.min() == pytest.approx(w / 1000.0, abs=1e-3)


def test_a_well_spans_the_ground_to_its_depth(conn):
    rows = conn.execute(
        "SELECT n.id, ST_X(n.geom), ST_Y(n.geom), n.ground_elevation_m, n.well_depth_m,"
        " (SELECT min(z - h) FROM ("
        "   SELECT ST_Z(ST_StartPoint(s.geom)) z, coalesce(s.diameter_mm, s.height_mm) / 2000.0 h"
        "   FROM cim.pipeline_segment s WHERE s.from_node_id = n.id UNION ALL"
        "   SELECT ST_Z(ST_EndPoint(s.geom)), coalesce(s.diameter_mm, s.height_mm) / 2000.0"
        "   FROM cim.pipeline_segment s WHERE s.to_node_id = n.id) e)"
        " FROM cim.pipeline_node n WHERE n.appurtenance LIKE '%%井' AND n.well_depth_m > 0"
        " ORDER BY n.id LIMIT 3"
    ).fetchall()
    assert rows
    source = PipelinePointsSource()
    for nid, x, y, ground, depth, pipe_bottom in rows:
        content = source.content(conn, around(x, y), 0.0)
        v = feature_vertices(content, nid)
        expected_bottom = min(ground - depth, pipe_bottom if pipe_bottom is not None else 1e9)
        assert v[:, 2].max() == pytest.approx(ground, abs=1e-6)
        assert v[:, 2].min() == pytest.approx(expected_bottom, abs=1e-6)
        radial = np.hypot(v[:, 0] - x, v[:, 1] - y)
        np.testing.assert_allclose(radial, radial[0], atol=1e-6)
        assert prop(content, "kind", nid) == "well"
        assert prop(content, "well_depth_m", nid) == pytest.approx(depth)


def test_a_valve_sits_on_the_pipe_axis(conn):
    nid, x, y, axis = conn.execute(
        "SELECT n.id, ST_X(n.geom), ST_Y(n.geom), (SELECT avg(z) FROM ("
        "  SELECT ST_Z(ST_StartPoint(s.geom)) z FROM cim.pipeline_segment s"
        "  WHERE s.from_node_id = n.id UNION ALL SELECT ST_Z(ST_EndPoint(s.geom))"
        "  FROM cim.pipeline_segment s WHERE s.to_node_id = n.id) e)"
        " FROM cim.pipeline_node n WHERE n.appurtenance = '阀门' ORDER BY n.id LIMIT 1"
    ).fetchone()
    content = PipelinePointsSource().content(conn, around(x, y), 0.0)
    v = feature_vertices(content, nid)
    assert v.mean(axis=0) == pytest.approx([x, y, axis], abs=1e-6)
    assert prop(content, "kind", nid) == "valve"


def _grid(box, n):
    x0, y0, x1, y1 = box
    xs, ys = np.linspace(x0, x1, n + 1), np.linspace(y0, y1, n + 1)
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for i in range(n) for j in range(n)]


@pytest.mark.parametrize(
    ("source", "table"),
    [
        (PipelinesSource(), "cim.pipeline_segment"),
        (ComponentsSource(), "cim.city_component"),
    ],
)
def test_every_feature_is_in_exactly_one_leaf(conn, source, table):
    ids = {r[0] for r in conn.execute(f"SELECT id FROM {table}").fetchall()}
    bounds = source.bounds(conn)
    children = _grid(bounds.box, 3)
    seen: list[int] = []
    for box in children:
        content = source.content(conn, box, 0.0)
        n = source.count(conn, box)
        got = content.features.ids.tolist() if content else []
        assert len(got) == n
        seen += got
    assert sorted(seen) == sorted(ids)  # each once, none missing
    assert source.count(conn, bounds.box) == len(ids)


def test_a_parents_error_is_at_least_the_hausdorff_distance(conn):
    source = PipelinesSource()
    box = source.bounds(conn).box
    tol = 4.0
    parent = source.content(conn, box, tol)
    rows = conn.execute(
        "SELECT id, network, coalesce(subtype, ''), diameter_mm, width_mm, height_mm,"
        " greatest(coalesce(diameter_mm, 0), coalesce(width_mm, 0), coalesce(height_mm, 0)),"
        " ST_AsText(geom) FROM cim.pipeline_segment"
    ).fetchall()
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(r[1:6], []).append(r)
    shown = set(parent.features.ids.tolist())
    lower = 0.0
    for key, members in groups.items():
        full = shapely.multilinestrings([shapely.from_wkt(r[7]) for r in members])
        gid = min(r[0] for r in members)
        if gid not in shown:  # dropped: its whole width is missing
            lower = max(lower, max(r[6] for r in members) / 1000.0)
            continue
        simplified = shapely.simplify(shapely.line_merge(full), tol / 2)
        lower = max(lower, shapely.hausdorff_distance(simplified, full))
        # the parent's vertices of this group lie around the full pipes, within its error
        radius = (key[2] or max(key[3] or 0, key[4] or 0)) / 2000.0
        v = feature_vertices(parent, gid)
        off = shapely.distance(shapely.points(v[:, :2]), full)
        assert off.max() <= radius * 1.5 + parent.error_m + 1e-6
        assert prop(parent, "pipes", gid) == len(members)
    assert parent.error_m >= lower
    assert parent.error_m > 0
    # a parent stands for fewer, longer pieces: far fewer vertices than the leaves
    leaf = source.content(conn, box, 0.0)
    assert len(parent.mesh.positions) < len(leaf.mesh.positions) / 4


@pytest.mark.parametrize("source", [PipelinePointsSource(), ComponentsSource()])
def test_parents_are_bounded_and_count_what_they_drop(conn, source):
    box = source.bounds(conn).box
    parent = source.content(conn, box, 8.0)
    leaf = source.content(conn, box, 0.0)
    assert len(parent.features) <= source.max_features_per_parent < len(leaf.features)
    shown = set(parent.features.ids.tolist())
    largest_dropped = 0.0
    for fid in set(leaf.features.ids.tolist()) - shown:
        v = feature_vertices(leaf, fid)
        extent = v.max(axis=0) - v.min(axis=0)
        largest_dropped = max(largest_dropped, float(extent.max()))
    assert parent.error_m >= largest_dropped - 1e-6


def tif_bilinear(x: float, y: float) -> float:
    """The sample's dem.tif at a point, read by rasterio, bilinear between cell centres."""
    with rasterio.open(SAMPLE_DEM) as src:
        values, transform = src.read(1).astype(np.float64), src.transform
    col, row = ~transform * (x, y)
    return float(map_coordinates(values, [[row - 0.5], [col - 0.5]], order=1)[0])


def test_a_component_stands_on_the_terrain_with_its_departments(conn):
    row = conn.execute(
        "SELECT c.id, c.class_code, c.name, c.dept_authority, c.dept_owner, c.dept_maintainer,"
        " ST_X(c.geom), ST_Y(c.geom) FROM cim.city_component c"
        " WHERE c.class_code = '0118' AND c.elevation_m IS NULL ORDER BY c.id LIMIT 1"
    ).fetchone()
    cid, code, name, auth, owner, maint, x, y = row
    content = ComponentsSource().content(conn, around(x, y), 0.0)
    assert prop(content, "class_code", cid) == code
    assert prop(content, "class_name", cid) == "路灯"
    assert prop(content, "name", cid) == name
    assert [prop(content, k, cid) for k in ("dept_authority", "dept_owner", "dept_maintainer")] == [
        auth,
        owner,
        maint,
    ]
    v = feature_vertices(content, cid)
    assert v[:, 2].min() == pytest.approx(tif_bilinear(x, y), abs=1e-3)
    assert v[:, 2].max() - v[:, 2].min() > 5  # a street light is a tall pole


def test_ground_off_the_dem_is_the_nearest_survey_points(conn):
    from cimtwin.tiles.threed.sources.ground import ground_heights

    x0, y0, x1, y1 = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
        " (SELECT ST_Extent(extent) e FROM cim.terrain_dem) t"
    ).fetchone()
    x, y = x1 + 500.0, (y0 + y1) / 2  # east of the DEM
    nearest = conn.execute(
        "SELECT ground_elevation_m FROM cim.pipeline_node WHERE ground_elevation_m IS NOT NULL"
        " ORDER BY ST_Distance(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4547)) LIMIT 1",
        (x, y),
    ).fetchone()[0]
    inside = ((x0 + x1) / 2, (y0 + y1) / 2)
    got = ground_heights(conn, np.array([x, inside[0]]), np.array([y, inside[1]]))
    assert got[0] == pytest.approx(nearest)
    assert got[1] == pytest.approx(tif_bilinear(*inside), abs=1e-3)


@pytest.mark.parametrize("tileset", ["pipelines", "pipeline_points", "components"])
def test_the_sample_tilesets_build_and_validate(database_url, loaded_sample, tmp_path, tileset):
    from cimtwin.tiles.threed.build import build_tileset
    from cimtwin.tiles.threed.placement import Placement
    from tests.threed_check import validate

    result = build_tileset(
        tileset,
        tmp_path,
        database_url=database_url,
        workers=1,
        placement=Placement(geoid="egm96_15.gtx", height_offset_m=0.0),
    )
    assert result.path is not None
    validate(result.path)
    doc = json.loads(result.path.read_text())
    assert doc["schema"]["classes"]
    assert result.largest <= 1_000_000
    manifest = json.loads((tmp_path / tileset / "build.json").read_text())
    table = {
        "pipelines": "cim.pipeline_segment",
        "components": "cim.city_component",
        "pipeline_points": "cim.pipeline_node n WHERE n.appurtenance"
        " IN ('阀门', '消防栓', '出水口') OR n.appurtenance LIKE '%%井'",
    }[tileset]
    with psycopg.connect(libpq_dsn(database_url)) as c:
        expected = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    leaves = [t for t in manifest["tiles"].values() if t["tolerance_m"] == 0]
    assert sum(t["features"] for t in leaves) == expected
    # the tileset says which OGC collection its ids are items of: the viewer's one lookup
    assert doc["asset"]["extras"]["layer"] == tileset


def glb_table(path) -> dict[str, list]:
    """The property table of a glb, decoded with pygltflib (ids and string columns)."""
    import pygltflib

    g = pygltflib.GLTF2().load_binary(str(path))
    blob = g.binary_blob()
    meta = g.extensions["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    cls = meta["schema"]["classes"][table["class"]]["properties"]
    out: dict[str, list] = {}
    for name, column in table["properties"].items():
        view = g.bufferViews[column["values"]]
        raw = blob[view.byteOffset : view.byteOffset + view.byteLength]
        if cls[name]["type"] == "STRING":
            ov = g.bufferViews[column["stringOffsets"]]
            offs = np.frombuffer(blob, "<u4", offset=ov.byteOffset, count=ov.byteLength // 4)
            out[name] = [raw[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]
        elif cls[name].get("componentType") == "UINT32":
            out[name] = np.frombuffer(raw, "<u4").tolist()
    return out


def test_picking_a_pipe_in_the_built_glb(database_url, loaded_sample, conn, tmp_path):
    """A known pipe's feature id and properties, read back from the glb of its leaf."""
    from cimtwin.tiles.threed.build import build_tileset
    from cimtwin.tiles.threed.placement import Placement

    pid, network, diameter, owner = conn.execute(
        "SELECT id, network, diameter_mm, owner FROM cim.pipeline_segment"
        " WHERE diameter_mm IS NOT NULL AND owner IS NOT NULL ORDER BY id OFFSET 100 LIMIT 1"
    ).fetchone()
    build_tileset(
        "pipelines",
        tmp_path,
        database_url=database_url,
        workers=1,
        placement=Placement(geoid="egm96_15.gtx", height_offset_m=0.0),
    )
    manifest = json.loads((tmp_path / "pipelines" / "build.json").read_text())
    leaves = [t for t in manifest["tiles"].values() if t["tolerance_m"] == 0 and t["path"]]
    found = []
    for leaf in leaves:
        table = glb_table(tmp_path / "pipelines" / leaf["path"])
        if pid in table["id"]:
            row = table["id"].index(pid)
            found.append((table["network"][row], table["size"][row], table["owner"][row]))
    assert found == [(network, f"DN{diameter:g}", owner)]  # in one leaf, with its properties


def test_a_pipe_never_sized_is_drawn_thin_with_no_size(conn):
    """Survey gaps happen: a pipe without diameter or section still exists, drawn at the
    default diameter with an empty size."""
    from cimtwin.tiles.threed.sources.pipelines import DEFAULT_DIAMETER_MM

    a, b = conn.execute(
        "SELECT id, batch_id FROM cim.pipeline_node ORDER BY batch_id, id LIMIT 2"
    ).fetchall()
    try:
        pid = conn.execute(
            "INSERT INTO cim.pipeline_segment (batch_id, id, dataset, network, from_node_id,"
            " to_node_id, link_type, depth_ref, flow_direction, length_m, county_code, geom)"
            " VALUES (%s, 999999, 'gap', 'JS', %s, %s, 'pipe', 'top', 0, 30, '440309',"
            " ST_GeomFromText("
            "'LINESTRING Z (502000 2501500 70, 502030 2501500 70)', 4547)) RETURNING id",
            (a[1], a[0], b[0]),
        ).fetchone()[0]
        content = PipelinesSource().content(conn, around(502015, 2501500), 0.0)
        assert prop(content, "size", pid) is None
        v = feature_vertices(content, pid)
        line = np.array([[502000, 2501500, 70.0], [502030, 2501500, 70.0]])
        dist = line_distance(v, line[0], line[1])
        np.testing.assert_allclose(dist, DEFAULT_DIAMETER_MM / 2000.0, atol=1e-6)
    finally:
        conn.rollback()


def test_points_rank_in_sql_by_the_size_they_are_drawn(conn):
    """Parents take the largest points by a size computed in SQL: it must be the drawn one."""
    from cimtwin.tiles.threed.sources.pipeline_points import point_shapes

    source = PipelinePointsSource()
    rows = source.rows(conn, source.bounds(conn).box)
    solid, _ = point_shapes(rows)
    drawn = np.array(
        [np.ptp(solid.positions[solid.item == i], axis=0).max() for i in range(len(rows))]
    )
    np.testing.assert_allclose([r[14] for r in rows], drawn, atol=1e-6)
