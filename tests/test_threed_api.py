"""``/3dtiles``: the tileset list and the files, with ETag/304, gzip, CORS, read access, and no
way out of a tileset's folder. The tileset here is made by hand (a valid glb box placed near the
North Station with pyproj), independent of the 3D build. The answers are checked twice: served
from the folder and from an S3 bucket (moto's server) holding the same files."""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from fastapi.testclient import TestClient
from pyproj import Transformer

from cimtwin.settings import Settings
from tests.s3_server import moto_s3

#: near the North Station (lon, lat, ellipsoidal height)
SITE = (114.02389, 22.61194, 0.0)


def enu_transform(lon: float, lat: float, h: float) -> list[float]:
    """Column-major 4x4 from a local east-north-up frame at (lon, lat, h) to ECEF (pyproj)."""
    x, y, z = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True).transform(lon, lat, h)
    lo, la = math.radians(lon), math.radians(lat)
    east = [-math.sin(lo), math.cos(lo), 0.0]
    north = [-math.sin(la) * math.cos(lo), -math.sin(la) * math.sin(lo), math.cos(la)]
    up = [math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)]
    return [*east, 0.0, *north, 0.0, *up, 0.0, x, y, z, 1.0]


def box_glb(size: tuple[float, float, float]) -> bytes:
    """A closed box standing on the frame's origin, glTF y-up (x east, y up, z south)."""
    sx, sy, sz = size
    corners = np.array(
        [[x, y, z] for x in (-sx / 2, sx / 2) for y in (0.0, sz) for z in (-sy / 2, sy / 2)],
        dtype=np.float32,
    )
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = np.array([[a, b, c] for a, b, c, d in faces for (a, b, c) in ((a, b, c), (a, c, d))])
    indices = tris.astype(np.uint16).tobytes()
    positions = corners.tobytes()
    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(version="2.0"),
        scene=0,
        scenes=[pygltflib.Scene(nodes=[0])],
        nodes=[pygltflib.Node(mesh=0)],
        meshes=[
            pygltflib.Mesh(
                primitives=[
                    pygltflib.Primitive(attributes=pygltflib.Attributes(POSITION=1), indices=0)
                ]
            )
        ],
        accessors=[
            pygltflib.Accessor(
                bufferView=0,
                componentType=pygltflib.UNSIGNED_SHORT,
                count=tris.size,
                type=pygltflib.SCALAR,
                max=[int(tris.max())],
                min=[int(tris.min())],
            ),
            pygltflib.Accessor(
                bufferView=1,
                componentType=pygltflib.FLOAT,
                count=len(corners),
                type=pygltflib.VEC3,
                max=corners.max(axis=0).tolist(),
                min=corners.min(axis=0).tolist(),
            ),
        ],
        bufferViews=[
            pygltflib.BufferView(
                buffer=0,
                byteOffset=0,
                byteLength=len(indices),
                target=pygltflib.ELEMENT_ARRAY_BUFFER,
            ),
            pygltflib.BufferView(
                buffer=0,
                byteOffset=len(indices),
                byteLength=len(positions),
                target=pygltflib.ARRAY_BUFFER,
            ),
        ],
        buffers=[pygltflib.Buffer(byteLength=len(indices) + len(positions))],
    )
    gltf.set_binary_blob(indices + positions)
    return b"".join(gltf.save_to_bytes())


def _tileset(content: str, transform: list[float] | None, size: tuple[float, float, float]) -> dict:
    sx, sy, sz = size
    root: dict = {
        "boundingVolume": {"box": [0, 0, sz / 2, sx / 2, 0, 0, 0, sy / 2, 0, 0, 0, sz / 2]},
        "geometricError": 0,
        "refine": "REPLACE",
        "content": {"uri": content},
    }
    if transform:
        root["transform"] = transform
    return {"asset": {"version": "1.1"}, "geometricError": 100, "root": root}


def make_tileset(folder: Path, title: str | None = None) -> Path:
    """A tileset near the North Station: a root box (content ``tiles/0.glb``) and a child whose
    content is an external tileset (``nested/tileset.json`` with its own box); also a
    ``.subtree`` file and a file kind that is not served."""
    size = (40.0, 30.0, 25.0)
    doc = _tileset("tiles/0.glb", enu_transform(*SITE), size)
    if title:
        doc["asset"]["extras"] = {"title": title}
    doc["root"]["geometricError"] = 50
    doc["root"]["children"] = [
        {
            "boundingVolume": doc["root"]["boundingVolume"],
            "geometricError": 0,
            "content": {"uri": "nested/tileset.json"},
        }
    ]
    (folder / "tiles").mkdir(parents=True)
    (folder / "nested").mkdir()
    (folder / "tileset.json").write_text(json.dumps(doc, indent=1))
    (folder / "tiles" / "0.glb").write_bytes(box_glb(size))
    # the child's content tileset: inherits the parent's transform
    (folder / "nested" / "tileset.json").write_text(json.dumps(_tileset("b.glb", None, size)))
    (folder / "nested" / "b.glb").write_bytes(box_glb((20.0, 20.0, 10.0)))
    (folder / "tiles" / "0.0.0.subtree").write_bytes(b"subt" + bytes(20))
    (folder / "build.log").write_text("not a tileset file")
    (folder / "tiles" / "texture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    (folder / "build.json").write_text('{"version": 1, "tiles": {}}')  # the build's manifest
    (folder / "tiles" / ".1.glb.tmp").write_bytes(b"half-written")
    (folder / "tiles" / ".hidden.glb").write_bytes(b"hidden")
    return folder


@pytest.fixture(scope="module")
def tiles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("3dtiles")
    make_tileset(root / "buildings")
    make_tileset(root / "pipelines", title="Pipelines at true depth")
    (root / "empty").mkdir()  # no tileset.json: not listed
    (root / "outside").mkdir()
    (root / "outside" / "secret.json").write_text('{"secret": true}')
    # symlinks out of the tileset folder: a file and a folder
    os.symlink(root / "outside" / "secret.json", root / "buildings" / "leak.json")
    os.symlink(root / "outside", root / "buildings" / "out")
    return root


BUCKET = "cimtwin-3d"


def _client(
    settings: Settings, storage: dict | None = None, **changes: object
) -> Iterator[TestClient]:
    """An app on ``settings`` with ``changes``; ``storage``: the tiles store's options, given
    as ``CIMTWIN_TILES_STORAGE_OPTIONS`` (what the store is opened with at the start)."""
    from cimtwin.api.app import create_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CIMTWIN_TILES_STORAGE_OPTIONS", json.dumps(storage or {}))
        app = create_app(settings.model_copy(update=changes))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def s3() -> Iterator[dict]:
    with moto_s3(BUCKET) as options:
        yield options


def upload(s3: dict, folder: Path, prefix: str) -> str:
    """The regular files under ``folder`` (symlinks left out: a bucket has none) as objects
    under ``prefix``; the store's URL."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not any(p.is_symlink() for p in (f, *f.parents)):
            fs.pipe_file(f"{BUCKET}/{prefix}/{f.relative_to(folder).as_posix()}", f.read_bytes())
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module", params=["folder", "bucket"])
def client(request: pytest.FixtureRequest, settings: Settings, tiles_dir: Path):
    """The app serving ``tiles_dir``: from the folder, or from a bucket holding its files."""
    if request.param == "folder":
        yield from _client(settings, tiles_dir=str(tiles_dir), public_url=None)
        return
    s3 = request.getfixturevalue("s3")
    url = upload(s3, tiles_dir, "served")
    yield from _client(settings, storage=s3, tiles_dir=url, public_url=None)


def test_list_names_each_tileset_with_an_absolute_url(client: TestClient) -> None:
    r = client.get("/3dtiles")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == [
        {
            "id": "buildings",
            "title": "Buildings",
            "url": "http://testserver/3dtiles/buildings/tileset.json",
        },
        {
            "id": "pipelines",
            "title": "Pipelines at true depth",
            "url": "http://testserver/3dtiles/pipelines/tileset.json",
        },
    ]


def test_list_title_falls_back_to_the_catalogue(client: TestClient) -> None:
    from cimtwin.spatial.catalogue import BY_ID

    titles = {t["id"]: t["title"] for t in client.get("/3dtiles").json()}
    assert titles["buildings"] == BY_ID["buildings"].title


def test_list_honours_the_public_url(settings: Settings, tiles_dir: Path) -> None:
    for c in _client(settings, tiles_dir=str(tiles_dir), public_url="https://twin.example/api/"):
        urls = [t["url"] for t in c.get("/3dtiles").json()]
    assert urls == [
        "https://twin.example/api/3dtiles/buildings/tileset.json",
        "https://twin.example/api/3dtiles/pipelines/tileset.json",
    ]


def test_no_tiles_folder_is_an_empty_list(settings: Settings, tmp_path: Path) -> None:
    for c in _client(settings, tiles_dir=str(tmp_path / "never-built")):
        r = c.get("/3dtiles")
    assert r.status_code == 200 and r.json() == []


def test_files_come_back_byte_for_byte_with_their_media_type(
    client: TestClient, tiles_dir: Path
) -> None:
    cases = {
        "tileset.json": "application/json",
        "tiles/0.glb": "model/gltf-binary",
        "nested/tileset.json": "application/json",
        "nested/b.glb": "model/gltf-binary",
        "tiles/0.0.0.subtree": "application/octet-stream",
    }
    for path, media_type in cases.items():
        r = client.get(f"/3dtiles/buildings/{path}", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].split(";")[0] == media_type, path
        assert r.content == (tiles_dir / "buildings" / path).read_bytes(), path
        assert "content-encoding" not in r.headers


def test_the_glb_served_reads_back_as_the_box(client: TestClient) -> None:
    body = client.get("/3dtiles/buildings/tiles/0.glb").content
    gltf = pygltflib.GLTF2.load_from_bytes(body)
    acc = gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION]
    assert acc.count == 8 and acc.max == pytest.approx([20.0, 25.0, 15.0])


def test_etag_is_strong_and_answers_304(client: TestClient, tiles_dir: Path) -> None:
    tags = set()
    for path in ("tileset.json", "tiles/0.glb", "nested/b.glb"):
        r = client.get(f"/3dtiles/buildings/{path}", headers={"Accept-Encoding": "identity"})
        etag = r.headers["etag"]
        tags.add(etag)
        assert etag.startswith('"') and etag.endswith('"'), etag
        again = client.get(
            f"/3dtiles/buildings/{path}",
            headers={"If-None-Match": etag, "Accept-Encoding": "identity"},
        )
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        weak = client.get(
            f"/3dtiles/buildings/{path}",
            headers={"If-None-Match": f'"other", W/{etag}', "Accept-Encoding": "identity"},
        )
        assert weak.status_code == 304
        other = client.get(f"/3dtiles/buildings/{path}", headers={"If-None-Match": '"other"'})
        assert other.status_code == 200
    assert len(tags) == 3  # each file its own tag


def test_etag_changes_when_the_file_is_rebuilt(settings: Settings, tmp_path: Path) -> None:
    folder = make_tileset(tmp_path / "buildings")
    for c in _client(settings, tiles_dir=str(tmp_path)):
        first = c.get("/3dtiles/buildings/tiles/0.glb")
        st = (folder / "tiles/0.glb").stat()
        (folder / "tiles/0.glb").write_bytes(box_glb((10.0, 10.0, 5.0)))
        os.utime(folder / "tiles/0.glb", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        second = c.get(
            "/3dtiles/buildings/tiles/0.glb", headers={"If-None-Match": first.headers["etag"]}
        )
        untouched = c.get("/3dtiles/buildings/nested/b.glb")
        untouched_again = c.get("/3dtiles/buildings/nested/b.glb")
    assert second.status_code == 200 and second.content != first.content
    assert second.headers["etag"] != first.headers["etag"]
    assert untouched.headers["etag"] == untouched_again.headers["etag"]


def test_json_and_glb_are_gzipped_when_accepted(client: TestClient, tiles_dir: Path) -> None:
    raw = (tiles_dir / "buildings" / "tileset.json").read_bytes()
    # the raw transport, so the compressed body can be checked as sent
    with client.stream(
        "GET", "/3dtiles/buildings/tileset.json", headers={"Accept-Encoding": "gzip"}
    ) as r:
        sent = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
    assert len(sent) < len(raw) and gzip.decompress(sent) == raw
    gz_etag = r.headers["etag"]
    plain = client.get("/3dtiles/buildings/tileset.json", headers={"Accept-Encoding": "identity"})
    assert plain.headers["etag"] != gz_etag  # one strong tag per representation
    refused = client.get(
        "/3dtiles/buildings/tileset.json", headers={"Accept-Encoding": "gzip;q=0, br"}
    )
    assert "content-encoding" not in refused.headers and refused.content == raw
    revalidated = client.get(
        "/3dtiles/buildings/tileset.json",
        headers={"Accept-Encoding": "gzip", "If-None-Match": gz_etag},
    )
    assert revalidated.status_code == 304
    # glb contents too (they shrink to a third); images, compressed already, go as they are
    glb_raw = (tiles_dir / "buildings" / "tiles" / "0.glb").read_bytes()
    with client.stream(
        "GET", "/3dtiles/buildings/tiles/0.glb", headers={"Accept-Encoding": "gzip"}
    ) as r:
        sent = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip" and gzip.decompress(sent) == glb_raw
    assert r.headers["content-type"] == "model/gltf-binary"
    png = client.get("/3dtiles/buildings/tiles/texture.png", headers={"Accept-Encoding": "gzip"})
    assert png.status_code == 200 and "content-encoding" not in png.headers
    assert png.headers["content-type"] == "image/png"


def test_cross_origin_viewers_may_read(client: TestClient) -> None:
    origin = {"Origin": "https://viewer.example"}
    for url in ("/3dtiles", "/3dtiles/buildings/tileset.json", "/3dtiles/buildings/tiles/0.glb"):
        r = client.get(url, headers=origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*", url
    glb = client.get("/3dtiles/buildings/tiles/0.glb", headers=origin)
    assert "etag" in glb.headers["access-control-expose-headers"].lower()
    pre = client.options(
        "/3dtiles/buildings/tiles/0.glb",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"


def test_closed_reads_need_a_key(settings: Settings, tiles_dir: Path) -> None:
    for c in _client(settings, tiles_dir=str(tiles_dir), open_reads=False):
        answers = [
            c.get(url)
            for url in (
                "/3dtiles",
                "/3dtiles/buildings/tileset.json",
                "/3dtiles/buildings/tiles/0.glb",
            )
        ]
        unknown_key = c.get("/3dtiles/buildings/tileset.json", headers={"X-API-Key": "nope"})
    for r in answers + [unknown_key]:
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "Unauthorized"


def test_a_viewer_key_opens_closed_reads(
    settings: Settings, tiles_dir: Path, scratch_database: str
) -> None:
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.spatial.access_queries import create_key

    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        key = create_key(conn, "3d-viewer", "viewer")[0]
    for c in _client(
        settings, database_url=scratch_database, tiles_dir=str(tiles_dir), open_reads=False
    ):
        listed = c.get("/3dtiles", headers={"Authorization": f"Bearer {key}"})
        glb = c.get("/3dtiles/buildings/tiles/0.glb", headers={"X-API-Key": key})
    assert listed.status_code == 200 and len(listed.json()) == 2
    assert glb.status_code == 200


def test_unknown_tileset_or_file_is_a_json_404(client: TestClient) -> None:
    for url in (
        "/3dtiles/roads/tileset.json",
        "/3dtiles/empty/tileset.json",
        "/3dtiles/buildings/tiles/9.glb",
        "/3dtiles/buildings/build.log",  # not a file kind a tileset serves
        "/3dtiles/buildings/build.json",  # the build's manifest
        "/3dtiles/buildings/tiles/.1.glb.tmp",  # a file being written
        "/3dtiles/buildings/tiles/.hidden.glb",
        "/3dtiles/buildings/tiles",  # a folder
        "/3dtiles/bad.id/tileset.json",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("application/json"), url
        assert r.json()["code"] == "NotFound" and r.json()["description"], url
    known = client.get("/3dtiles/roads/tileset.json").json()["description"]
    assert "buildings" in known and "pipelines" in known


def test_the_hidden_manifest_is_the_builds() -> None:
    from cimtwin.api.threed import BUILD_FILES
    from cimtwin.tiles.threed.build import MANIFEST

    assert MANIFEST in BUILD_FILES


@pytest.mark.parametrize(
    "raw_path",
    [
        "/3dtiles/buildings/../outside/secret.json",
        "/3dtiles/buildings/%2e%2e/outside/secret.json",
        "/3dtiles/buildings/tiles/%2e%2e/%2e%2e/outside/secret.json",
        "/3dtiles/buildings/..%2f..%2foutside%2fsecret.json",
        "/3dtiles/buildings/%2fetc%2fpasswd.json",
        "/3dtiles/buildings//etc/passwd.json",
        "/3dtiles/buildings/tiles%5c..%5c..%5coutside%5csecret.json",
        "/3dtiles/buildings/leak.json",
        "/3dtiles/buildings/out/secret.json",
        "/3dtiles/buildings/tileset.json%00.glb",
        "/3dtiles/..%2foutside/secret.json",
        "/3dtiles/%2e%2e/outside/secret.json",
        "/3dtiles/outside/secret.json",
    ],
)
def test_no_path_leaves_the_tileset_folder(client: TestClient, raw_path: str) -> None:
    # sent as written: the client must not normalise the dots away before the server sees them
    r = client.request("GET", raw_path, follow_redirects=False)
    assert r.status_code in (400, 404, 422), (raw_path, r.status_code)
    assert b'"secret": true' not in r.content and b"root:" not in r.content
    assert r.json()["code"] in ("InvalidParameterValue", "NotFound")


def test_the_server_sees_the_dots(client: TestClient) -> None:
    """The traversal cases reach the route undotted-out (else they would prove nothing)."""
    r = client.get("/3dtiles/buildings/%2e%2e/outside/secret.json")
    assert r.status_code == 400 and "'..'" in r.json()["description"]


def test_openapi_documents_the_3d_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/3dtiles" in paths
    assert "/3dtiles/{id}/tileset.json" in paths and "/3dtiles/{id}/{path}" in paths
    media = paths["/3dtiles/{id}/{path}"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "model/gltf-binary", "application/octet-stream"} <= set(media)


def test_readme_documents_the_3d_settings_with_their_defaults() -> None:
    from cimtwin.settings import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `")
        for line in readme.splitlines()
        if line.startswith("| `CIMTWIN_")
    }
    defaults = {k: f.default for k, f in Settings.model_fields.items()}
    assert rows["CIMTWIN_TILES_DIR"] == defaults["tiles_dir"]
    assert rows["CIMTWIN_GEOID"] == defaults["geoid"]
    assert float(rows["CIMTWIN_HEIGHT_OFFSET_M"]) == defaults["height_offset_m"]
    assert "`/3dtiles`" in readme and "`/3dtiles/{id}/tileset.json`" in readme


def test_gzip_cache_is_bounded_and_keeps_the_recent() -> None:
    from cimtwin.api.threed import GzipCache

    rng = np.random.default_rng(7)
    bodies = {f"f{i}": rng.integers(0, 255, 300, dtype=np.uint8).tobytes() for i in range(20)}
    cache = GzipCache(max_bytes=2000)
    for name, body in bodies.items():
        assert gzip.decompress(cache.get((name, "e"), body)) == body
        assert cache.size <= 2000
        cache.get(("f0", "e"), bodies["f0"])  # used again and again: stays
    kept = set(cache._items)
    assert ("f0", "e") in kept and ("f19", "e") in kept and ("f1", "e") not in kept
    # a body too large for a quarter of the cache is compressed but not kept
    big = rng.integers(0, 255, 1000, dtype=np.uint8).tobytes()
    assert gzip.decompress(cache.get(("big", "e"), big)) == big and ("big", "e") not in cache._items


# --- served from a bucket ---------------------------------------------------------------------


def test_a_bucket_serves_new_and_rebuilt_files(
    settings: Settings, tmp_path: Path, s3: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tileset uploaded after the start is listed once the kept list expires; an object
    rebuilt with other bytes gets another ETag, an untouched one keeps its tag."""
    import s3fs

    from cimtwin.api import threed

    monkeypatch.setattr(threed, "REMOTE_LIST_SECONDS", 0.0)
    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    url = upload(s3, make_tileset(tmp_path / "buildings"), "rebuilt/buildings")
    for c in _client(settings, storage=s3, tiles_dir=url.rsplit("/", 1)[0]):
        assert [t["id"] for t in c.get("/3dtiles").json()] == ["buildings"]
        assert c.get("/3dtiles/pipelines/tileset.json").status_code == 404
        upload(s3, make_tileset(tmp_path / "pipelines", title="Pipes"), "rebuilt/pipelines")
        listed = c.get("/3dtiles").json()
        first = c.get("/3dtiles/buildings/tiles/0.glb")
        fs.pipe_file(f"{BUCKET}/rebuilt/buildings/tiles/0.glb", box_glb((10.0, 10.0, 5.0)))
        second = c.get(
            "/3dtiles/buildings/tiles/0.glb", headers={"If-None-Match": first.headers["etag"]}
        )
        untouched = c.get("/3dtiles/buildings/nested/b.glb")
        revalidated = c.get(
            "/3dtiles/buildings/nested/b.glb", headers={"If-None-Match": untouched.headers["etag"]}
        )
        pipes = c.get("/3dtiles/pipelines/tiles/0.glb", headers={"Accept-Encoding": "identity"})
    assert [(t["id"], t["title"]) for t in listed] == [
        ("buildings", "Buildings"),
        ("pipelines", "Pipes"),
    ]
    assert second.status_code == 200 and second.content == box_glb((10.0, 10.0, 5.0))
    assert second.headers["etag"] != first.headers["etag"]
    assert revalidated.status_code == 304
    assert pipes.status_code == 200 and pipes.content == box_glb((40.0, 30.0, 25.0))


def test_a_bucket_that_does_not_answer_is_a_503(settings: Settings) -> None:
    """No server behind the endpoint: a 503 naming the store, with Retry-After, not a 500."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "retries": 1,
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    for c in _client(settings, storage=gone, tiles_dir="s3://nowhere/3d"):
        answers = [c.get("/3dtiles"), c.get("/3dtiles/buildings/tileset.json")]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "ServiceUnavailable"
        assert "s3://nowhere/3d" in r.json()["description"] and r.headers["retry-after"]


def test_a_tiles_url_that_names_no_store_stops_the_start(settings: Settings) -> None:
    from cimtwin.api.app import create_app
    from cimtwin.errors import UserError

    with pytest.raises(UserError, match="unknown storage protocol 'nosuch'"):
        create_app(settings.model_copy(update={"tiles_dir": "nosuch://bucket/3d"}))
