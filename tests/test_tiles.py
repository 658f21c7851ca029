"""Vector tiles from the loaded sample: content, composite tiles, cache and its invalidation,
guard rails; GDAL reads a composite tile."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import time
from pathlib import Path

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from cimtwin.settings import Settings
from cimtwin.spatial.base import SCHEMA
from cimtwin.tiles.mvt import WEB_MERCATOR
from tests.conftest import q

STATION = (114.02389, 22.61194)


def tile_at(z: int, lon: float = STATION[0], lat: float = STATION[1]) -> tuple[int, int, int]:
    t = WEB_MERCATOR.tile(lon, lat, z)
    return t.z, t.x, t.y


def decode(body: bytes) -> dict:
    return mapbox_vector_tile.decode(body)


def test_composite_tile_holds_every_layer_with_stable_ids(
    client: TestClient, engine: Engine
) -> None:
    z, x, y = tile_at(16)
    r = client.get(f"/tiles/pipelines,components,buildings,grids/{z}/{x}/{y}.mvt")
    assert r.status_code == 200 and r.headers["content-type"] == (
        "application/vnd.mapbox-vector-tile"
    )
    layers = decode(r.content)
    assert set(layers) == {"pipelines", "components", "buildings", "grids"}
    pipes = layers["pipelines"]["features"]
    assert pipes and all(isinstance(f["id"], int) for f in pipes)
    ids = {f["id"] for f in pipes}
    with engine.connect() as c:
        known = set(c.execute(text("SELECT id FROM cim.pipeline_segment")).scalars())
        grid_codes = set(c.execute(text("SELECT code::bigint FROM cim.work_grid")).scalars())
    assert ids <= known
    assert {f["id"] for f in layers["grids"]["features"]} <= grid_codes
    props = pipes[0]["properties"]
    assert {"network", "diameter_mm", "material"} <= set(props) or "width_mm" in props
    # the same tile twice gives the same bytes
    again = client.get(f"/tiles/pipelines,components,buildings,grids/{z}/{x}/{y}.mvt")
    assert again.content == r.content


def test_tile_matches_postgis_count(client: TestClient, engine: Engine) -> None:
    """Every component whose point lies inside the tile is in it (points: no simplification)."""
    z, x, y = tile_at(16)
    body = client.get(f"/tiles/components/{z}/{x}/{y}.mvt").content
    got = len(decode(body)["components"]["features"])
    with engine.connect() as c:
        want = c.execute(
            text(
                "SELECT count(*) FROM cim.city_component WHERE "
                "ST_Intersects(ST_Transform(geom, 3857),"
                " ST_TileEnvelope(:z, :x, :y))"
            ),
            {"z": z, "x": x, "y": y},
        ).scalar()
    assert want > 0 and got >= want  # the buffer may add a few from just outside


def test_below_minzoom_layers_are_left_out(client: TestClient) -> None:
    z, x, y = tile_at(12)
    r = client.get(f"/tiles/components,grids/{z}/{x}/{y}.mvt")
    assert set(decode(r.content)) == {"grids"}


def test_etag_304_and_gzip(client: TestClient) -> None:
    z, x, y = tile_at(15)
    url = f"/tiles/pipelines/{z}/{x}/{y}.mvt"
    r = client.get(url, headers={"Accept-Encoding": "gzip"})
    etag = r.headers["etag"]
    assert r.headers.get("content-encoding") == "gzip"
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    raw = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.decompress(gzip.compress(raw.content)) == raw.content and decode(raw.content)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/tiles/pipelines/15/99999/1.mvt", 404),
        ("/tiles/pipelines/25/0/0.mvt", 422),
        ("/tiles/pipelines/-1/0/0.mvt", 422),
        ("/tiles/pipelines/3/8/0.mvt", 404),
        ("/tiles/nosuchlayer/15/0/0.mvt", 404),
        ("/tiles/pipelines,nosuch/15/0/0.mvt", 404),
        ("/tiles/pipelines/a/0/0.mvt", 422),
        ("/tiles/pipelines/15/1/x.mvt", 422),
        ("/tiles/pipelines/15/0/99999999999999999999.mvt", 404),
        ("/tiles/nosuch/tilejson.json", 404),
    ],
)
def test_bad_requests_are_4xx_with_a_message(client: TestClient, path: str, status: int) -> None:
    r = client.get(path)
    assert r.status_code == status
    body = r.json()  # the service's one error format
    assert body["code"] in ("NotFound", "InvalidParameterValue") and body["description"]


def test_tilejson(client: TestClient) -> None:
    tj = client.get("/tiles/pipelines,components/tilejson.json").json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"][0].endswith("/tiles/pipelines,components/{z}/{x}/{y}.mvt")
    ids = [v["id"] for v in tj["vector_layers"]]
    assert ids == ["pipelines", "components"]
    assert tj["vector_layers"][0]["fields"]["diameter_mm"] == "Number"
    w, s, e, n = tj["bounds"]
    assert w < STATION[0] < e and s < STATION[1] < n


def test_tilejson_bounds_cover_the_collections_extents(client: TestClient, engine: Engine) -> None:
    """TileJSON and /collections give one extent, and it covers every vertex of the data (a
    box transformed by its corners only cuts off the curved edges of a Gauss-Krüger box)."""
    layers = ["pipelines", "parcels", "grids"]
    tj = client.get(f"/tiles/{','.join(layers)}/tilejson.json").json()
    boxes = [
        client.get(f"/collections/{layer}").json()["extent"]["spatial"]["bbox"][0]
        for layer in layers
    ]
    union = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    assert tj["bounds"] == pytest.approx(union, abs=2e-7)
    # oracle: every stored vertex, transformed one by one with pyproj
    import numpy as np
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs(4547, 4326, always_xy=True)
    for layer, table, col in (
        ("pipelines", "pipeline_segment", "geom"),
        ("parcels", "parcel", "geom"),
        ("grids", "work_grid", "geom"),
    ):
        wkb = [bytes(r[0]) for r in q(engine, f'SELECT ST_AsBinary({col}) FROM "{SCHEMA}".{table}')]
        xy = shapely.get_coordinates(shapely.from_wkb(wkb))
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        w, s, e, n = tj["bounds"]
        assert w <= np.min(lon) and np.max(lon) <= e and s <= np.min(lat) and np.max(lat) <= n, (
            layer
        )


def _wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_incident_edit_changes_its_tile_and_spares_the_others(
    client: TestClient, engine: Engine
) -> None:
    cache = client.app.state.tile_cache
    with engine.connect() as c:
        iid, lon, lat = c.execute(
            text(
                "SELECT id, ST_X(ST_Transform(geom, 4326)), ST_Y(ST_Transform(geom, 4326)) "
                "FROM cim.incident WHERE status NOT IN ('resolved','closed') ORDER BY id LIMIT 1"
            )
        ).one()
    z, x, y = tile_at(16, lon, lat)
    here = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    far = f"/tiles/incidents/{z}/{x + 3}/{y + 3}.mvt"
    before = client.get(here).content
    client.get(far)
    hits = cache.hits
    client.get(far)
    assert cache.hits == hits + 1  # cached
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE cim.incident SET severity = 5 - severity, status = 'in_progress' "
                "WHERE id = :i"
            ),
            {"i": iid},
        )
    key_here = (("incidents",), z, x, y)
    assert _wait_for(lambda: key_here not in cache.entries)
    after = client.get(here).content
    assert after != before
    feats = {f["id"]: f["properties"] for f in decode(after)["incidents"]["features"]}
    assert feats[iid]["status"] == "in_progress"
    hits = cache.hits
    client.get(far)
    assert cache.hits == hits + 1  # the unaffected tile is still served from the cache


def test_memory_cache_refuses_a_put_across_an_invalidation() -> None:
    """A tile rendered before a change but put after the change was applied is not kept."""
    import asyncio

    from cimtwin.tiles.cache import MemoryTileCache, make_entry
    from cimtwin.tiles.mvt import TileRequest

    async def scenario() -> None:
        cache = MemoryTileCache(1 << 20)
        z, x, y = tile_at(16)
        key = (("incidents",), z, x, y)
        entry = make_entry(("incidents",), TileRequest(z, x, y), b"tile")
        token = await cache.token()
        cache.invalidate({"incident"}, (0.0, 0.0, 1.0, 1.0))  # elsewhere, still in between
        await cache.put(key, entry, token)
        assert key not in cache.entries and await cache.get(key) is None
        await cache.put(key, entry, await cache.token())
        assert await cache.get(key) is entry and cache.hits == 1

    asyncio.run(scenario())


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL ogrinfo not installed")
def test_gdal_reads_a_composite_tile(client: TestClient, tmp_path: Path) -> None:
    z, x, y = tile_at(16)
    body = client.get(f"/tiles/pipelines,components,buildings/{z}/{x}/{y}.mvt").content
    f = tmp_path / f"{y}.pbf"
    f.write_bytes(body)
    out = subprocess.run(
        ["ogrinfo", "-ro", "-so", "-oo", f"Z={z}", "-oo", f"X={x}", "-oo", f"Y={y}", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^\d+: (\w+)", out.stdout, flags=re.M)
    assert listed == ["pipelines", "components", "buildings"], out.stdout
    counts = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", "-oo", f"Z={z}", "-oo", f"X={x}", "-oo", f"Y={y}", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    n = [int(v) for v in re.findall(r"Feature Count: (\d+)", counts.stdout)]
    assert len(n) == 3 and all(v > 0 for v in n), counts.stdout


def test_static_export_pmtiles_and_mbtiles(
    settings: Settings, loaded_sample, tmp_path: Path, engine: Engine
) -> None:
    import pyogrio
    from pmtiles.reader import MmapSource, Reader

    from cimtwin.tiles.export import export

    pm = tmp_path / "twin.pmtiles"
    counts = export(["pipelines", "grids"], 13, 15, pm, settings.database_url)
    assert counts["tiles_written"] > 0
    with pm.open("rb") as fh:
        reader = Reader(MmapSource(fh))
        header = reader.header()
        assert (header["min_zoom"], header["max_zoom"]) == (13, 15)
        assert [v["id"] for v in reader.metadata()["vector_layers"]] == ["pipelines", "grids"]
        z, x, y = tile_at(15)
        body = gzip.decompress(reader.get(z, x, y))
    assert set(decode(body)) == {"pipelines", "grids"}
    # GDAL (pyogrio's bundled build has the PMTiles driver) reads every pipe at the top zoom
    df = pyogrio.read_dataframe(pm, layer="pipelines")
    assert len(df) > 0
    mb = tmp_path / "twin.mbtiles"
    export(["components"], 15, 15, mb, settings.database_url)
    if shutil.which("ogrinfo"):
        out = subprocess.run(
            ["ogrinfo", "-ro", "-al", "-so", str(mb)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "components" in out.stdout
        n = sum(int(v) for v in re.findall(r"Feature Count: (\d+)", out.stdout))
        with engine.connect() as c:
            total = c.execute(text("SELECT count(*) FROM cim.city_component")).scalar()
        assert n >= total  # tiles overlap by their buffer, so a point may be counted twice


def test_export_refuses_bad_arguments(settings: Settings, tmp_path: Path) -> None:
    from cimtwin.errors import UserError
    from cimtwin.tiles.export import export

    with pytest.raises(UserError, match="unknown layer"):
        export(["nosuch"], 12, 14, tmp_path / "a.pmtiles", settings.database_url)
    with pytest.raises(UserError, match="must end in"):
        export(["grids"], 12, 14, tmp_path / "a.zip", settings.database_url)
    with pytest.raises(UserError, match="zoom range"):
        export(["grids"], 15, 12, tmp_path / "a.pmtiles", settings.database_url)


def test_low_zoom_pipelines_are_a_merged_overview(client: TestClient, engine: Engine) -> None:
    """Below z15 pipes are merged per network and subtype: few features, every network kept."""
    z, x, y = tile_at(14)
    feats = decode(client.get(f"/tiles/pipelines/{z}/{x}/{y}.mvt").content)["pipelines"]["features"]
    groups = {(f["properties"]["network"], f["properties"]["subtype"]) for f in feats}
    assert len(feats) == len(groups)  # one merged feature per group
    with engine.connect() as c:
        want = set(
            c.execute(
                text(
                    "SELECT DISTINCT network, subtype FROM cim.pipeline_segment WHERE geom && "
                    "ST_Transform(ST_TileEnvelope(:z, :x, :y), 4547)"
                ),
                {"z": z, "x": x, "y": y},
            ).all()
        )
    assert groups == {tuple(g) for g in want}
    assert sum(f["properties"]["features"] for f in feats) >= 100


def test_tile_route_is_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/tiles/{layers}/{z}/{x}/{y}.mvt"]["get"]
    assert [p["name"] for p in op["parameters"]][:4] == ["layers", "z", "x", "y"]
    assert "/tiles/{layers}/tilejson.json" in doc["paths"]


def test_closed_reads_need_a_key_for_tiles_too(settings: Settings, loaded_sample) -> None:
    from cimtwin.api.app import create_app

    closed = settings.model_copy(update={"open_reads": False, "tile_cache_mb": 0})
    with TestClient(create_app(closed)) as c:
        r = c.get("/tiles/pipelines/15/26762/14270.mvt")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "API key" in r.json()["description"]
        r = c.get("/tiles/pipelines/15/26762/14270.mvt", headers={"X-API-Key": "nonsense"})
        assert r.status_code == 401 and r.json()["description"] == "invalid or revoked key"


def test_one_tile_query_at_a_time_still_serves_composite_tiles(
    settings: Settings, client: TestClient, loaded_sample
) -> None:
    """With CIMTWIN_TILE_DB_CONCURRENCY=1 the layers of a composite tile take turns; the tile
    is the same as with the default limit."""
    from cimtwin.api.app import create_app

    z, x, y = tile_at(16)
    path = f"/tiles/pipelines,components,buildings,grids/{z}/{x}/{y}.mvt"
    one = settings.model_copy(update={"tile_db_concurrency": 1, "tile_cache_mb": 0})
    with TestClient(create_app(one)) as c:
        r = c.get(path)
    assert r.status_code == 200
    assert r.content == client.get(path).content
