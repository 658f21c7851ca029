"""What the features API answers besides plain GeoJSON: gzip when the client accepts it,
``properties=`` field selection, and HTML pages for a person with a browser."""

from __future__ import annotations

import gzip
import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cimtwin.api.features import html
from cimtwin.spatial.catalogue import BY_ID
from tests.conftest import q

PIPES = "/collections/pipelines/items"


def _raw(client: TestClient, url: str, **headers: str) -> tuple[dict[str, str], bytes]:
    """Headers and the body as sent (not decompressed)."""
    with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, r.read()
        return dict(r.headers), b"".join(r.iter_raw())


# --- gzip -----------------------------------------------------------------------------------


def test_geojson_is_gzipped_when_accepted(client: TestClient, engine: Engine) -> None:
    url = f"{PIPES}?limit=10000"
    plain_headers, plain = _raw(client, url, **{"accept-encoding": "identity"})
    gz_headers, packed = _raw(client, url, **{"accept-encoding": "gzip, deflate"})
    assert "content-encoding" not in plain_headers
    assert gz_headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in gz_headers["vary"] and "Accept-Encoding" in plain_headers["vary"]
    body = json.loads(plain)
    unpacked = json.loads(gzip.decompress(packed))
    assert {**unpacked, "timeStamp": None} == {**body, "timeStamp": None}
    total = q(engine, 'SELECT count(*) FROM "cim"."pipeline_segment"')[0][0]
    assert body["numberReturned"] == total == 2480
    # measured: 1 348 112 bytes plain, 119 723 gzipped (level 1)
    assert len(plain) > 1_000_000 and len(packed) < len(plain) / 5, (len(plain), len(packed))
    refused = _raw(client, url, **{"accept-encoding": "gzip;q=0"})[0]
    assert "content-encoding" not in refused


def test_small_answers_go_as_they_are(client: TestClient) -> None:
    """Below 1 KB gzip's own cost is more than it saves: one pipe (about 600 bytes) and an
    empty page go plain, a page of ten goes gzipped."""
    one = client.get(f"{PIPES}?limit=1").json()["features"][0]["id"]
    headers, body = _raw(client, f"{PIPES}/{one}", **{"accept-encoding": "gzip"})
    assert "content-encoding" not in headers and len(body) < 1024
    assert json.loads(body)["id"] == one
    headers, body = _raw(
        client, f"{PIPES}?filter=length_m%20%3C%200", **{"accept-encoding": "gzip"}
    )
    assert "content-encoding" not in headers and json.loads(body)["numberReturned"] == 0
    headers, packed = _raw(client, f"{PIPES}?limit=10", **{"accept-encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(packed))["numberReturned"] == 10


# --- properties= ----------------------------------------------------------------------------


def test_properties_selects_the_fields(client: TestClient) -> None:
    full = client.get(PIPES, params={"limit": 50}).json()["features"]
    some = client.get(PIPES, params={"limit": 50, "properties": "width_mm, material"})
    assert some.status_code == 200
    feats = some.json()["features"]
    assert [f["id"] for f in feats] == [f["id"] for f in full]
    assert all(list(f["properties"]) == ["width_mm", "material"] for f in feats)
    assert [f["properties"]["material"] for f in feats] == [
        f["properties"]["material"] for f in full
    ]
    assert all(f["geometry"] == g["geometry"] for f, g in zip(feats, full, strict=True))
    none = client.get(PIPES, params={"limit": 3, "properties": ""}).json()["features"]
    assert [f["properties"] for f in none] == [{}, {}, {}]
    one = client.get(f"{PIPES}/{full[0]['id']}", params={"properties": "length_m"}).json()
    assert one["properties"] == {"length_m": full[0]["properties"]["length_m"]}
    nxt = [x["href"] for x in some.json()["links"] if x["rel"] == "next"]
    assert nxt and "properties=width_mm" in nxt[0].replace("%2C", ",").replace("+", "")


def test_unknown_properties_are_named(client: TestClient) -> None:
    r = client.get(PIPES, params={"properties": "material,geom,password"})
    assert r.status_code == 400
    text = r.json()["description"]
    assert "'geom'" in text and "'password'" in text and "material" in text.split("has:")[1]
    r = client.get(f"{PIPES}/1", params={"properties": "id"})
    assert r.status_code == 400 and "'id'" in r.json()["description"]


# --- f=html ---------------------------------------------------------------------------------


def _page(client: TestClient, url: str, **headers: str) -> str:
    r = client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = r.text
    assert "<script" not in page.lower()
    # nothing loaded from elsewhere: no src attributes, links only to this service
    assert not re.search(r"\ssrc=", page)
    assert all(h.startswith("http://testserver/") for h in re.findall(r'href="([^"]+)"', page))
    return page


def test_html_pages(client: TestClient, engine: Engine) -> None:
    assert '<a href="http://testserver/collections">Feature collections</a>' in _page(
        client, "/?f=html"
    )
    page = _page(client, "/collections?f=html")
    for layer in (BY_ID["pipelines"], BY_ID["incidents"]):
        assert f'href="http://testserver/collections/{layer.id}?f=html"' in page
    page = _page(client, "/collections/pipelines?f=html")
    assert "Pipelines (管线)" in page and "items?f=html" in page
    page = _page(client, f"{PIPES}?limit=5&f=html")
    assert page.count('<tr><td><a href="http://testserver/collections/pipelines/items/') == 5
    assert "5 of 2480 features" in page
    assert 'rel="next"' in page and "offset=5&amp;f=html" in page
    first = client.get(PIPES, params={"limit": 1}).json()["features"][0]
    page = _page(client, f"{PIPES}/{first['id']}?f=html")
    assert f"<th>material</th><td>{first['properties']['material']}</td>" in page
    assert "&quot;type&quot;: &quot;LineString&quot;" in page


def test_browsers_get_pages_and_gis_clients_json(client: TestClient) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    _page(client, "/collections", accept=browser)
    for accept in ("application/json", "application/geo+json, application/json", "*/*"):
        r = client.get(f"{PIPES}?limit=1", headers={"accept": accept})
        assert r.headers["content-type"] == "application/geo+json"
        assert "Accept" in r.headers["vary"].split(", ")
    assert client.get("/conformance?f=html").status_code == 400
    assert client.get("/collections?f=xml").status_code == 400


def test_html_escapes_every_value() -> None:
    evil = '<script>alert("x")</script>'
    feature = {
        "id": evil,
        "geometry": {"type": "Point", "coordinates": [1, 2]},
        "properties": {evil: evil, "name": "a&b"},
        "links": [{"href": f'http://x/"{evil}', "rel": "self", "title": evil}],
    }
    page = html.item(evil, feature).body.decode()
    assert "<script" not in page and "&lt;script&gt;" in page and "a&amp;b" in page
    assert 'href="http://x/&quot;&lt;script' in page
