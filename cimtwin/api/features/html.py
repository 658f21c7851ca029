"""HTML pages of the features API (``f=html``, or a browser's Accept): the landing page, the
collections, one collection, a page of features and one feature, for a person with a
browser. Every value is escaped; the pages carry their few styles inline and load nothing
else (no scripts, fonts or images)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from fastapi.responses import Response

HTML = "text/html; charset=utf-8"
_STYLE = (
    "body{font:14px/1.4 sans-serif;margin:1.5em;max-width:72em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}pre{white-space:pre-wrap;"
    "word-break:break-all;max-height:20em;overflow:auto;background:#f8f8f8;padding:.5em}"
    "nav a{margin-right:1em}"
)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str, links: list[dict[str, Any]]) -> Response:
    nav = "".join(
        f'<a href="{_e(x["href"])}" rel="{_e(x["rel"])}">{_e(x.get("title") or x["rel"])}</a>'
        for x in links
        if x["rel"] in ("self", "collection", "next", "prev", "data", "items")
    )
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><nav>{nav}</nav><h1>{_e(title)}</h1>{body}</body></html>"
    )
    return Response(text, media_type=HTML, headers={"Vary": "Accept"})


def _as_html(href: str) -> str:
    """A link to the HTML page of a resource (``f=html`` added or replacing ``f``)."""
    base, _, query = href.partition("?")
    params = [p for p in query.split("&") if p and not p.startswith("f=")]
    return base + "?" + "&".join([*params, "f=html"])


def _link_list(links: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<li><a href="{_e(x["href"])}">{_e(x.get("title") or x["href"])}</a> '
        f"<small>({_e(x['rel'])}, {_e(x.get('type', ''))})</small></li>"
        for x in links
    )
    return f"<ul>{rows}</ul>"


def landing(doc: dict[str, Any]) -> Response:
    body = f"<p>{_e(doc.get('description'))}</p>" + _link_list(doc["links"])
    return _page(doc["title"], body, [])


def collections(doc: dict[str, Any]) -> Response:
    rows = "".join(
        f'<tr><td><a href="{_e(_as_html(_self(c)))}">{_e(c["id"])}</a></td>'
        f"<td>{_e(c['title'])}</td><td>{_e(c.get('description'))}</td>"
        f'<td><a href="{_e(_as_html(_self(c) + "/items"))}">features</a></td></tr>'
        for c in doc["collections"]
    )
    body = f"<table><tr><th>id</th><th>title</th><th>description</th><th></th></tr>{rows}</table>"
    return _page("Feature collections", body, doc["links"])


def _self(doc: dict[str, Any]) -> str:
    return str(next(x["href"] for x in doc["links"] if x["rel"] == "self"))


def collection(doc: dict[str, Any]) -> Response:
    bbox = doc.get("extent", {}).get("spatial", {}).get("bbox", [[]])[0]
    body = (
        f"<p>{_e(doc.get('description'))}</p>"
        f'<p><a href="{_e(_as_html(_self(doc) + "/items"))}">Browse the features</a></p>'
        f"<table><tr><th>extent (CRS84)</th><td>{_e(', '.join(map(str, bbox)))}</td></tr>"
        f"<tr><th>storage CRS</th><td>{_e(doc.get('storageCrs'))}</td></tr>"
        f"<tr><th>CRS</th><td>{'<br>'.join(_e(c) for c in doc.get('crs', []))}</td></tr></table>"
        + _link_list(doc["links"])
    )
    return _page(doc["title"], body, [])


def items(title: str, page: dict[str, Any], features: list[dict[str, Any]]) -> Response:
    names = list(dict.fromkeys(k for f in features for k in (f.get("properties") or {})))
    head = "".join(f"<th>{_e(n)}</th>" for n in ["id", "geometry", *names])
    rows = "".join(
        f'<tr><td><a href="{_e(_as_html(_feature_href(page, f)))}">{_e(f.get("id"))}</a></td>'
        f"<td>{_e((f.get('geometry') or {}).get('type'))}</td>"
        + "".join(f"<td>{_e((f.get('properties') or {}).get(n))}</td>" for n in names)
        + "</tr>"
        for f in features
    )
    info = (
        f"<p>{_e(page['numberReturned'])} of {_e(page['numberMatched'])} features "
        f"(JSON: <code>f=json</code>)</p>"
    )
    links = [{**x, "href": _as_html(x["href"])} for x in page["links"]]
    return _page(title, info + f"<table><tr>{head}</tr>{rows}</table>", links)


def _feature_href(page: dict[str, Any], feature: dict[str, Any]) -> str:
    base = next(x["href"] for x in page["links"] if x["rel"] == "collection")
    return f"{base}/items/{feature.get('id')}"


def item(title: str, feature: dict[str, Any]) -> Response:
    props = feature.get("properties") or {}
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in props.items())
    geometry = json.dumps(feature.get("geometry"), ensure_ascii=False)
    body = (
        f"<table><tr><th>id</th><td>{_e(feature.get('id'))}</td></tr>{rows}</table>"
        f"<h2>Geometry</h2><pre>{_e(geometry)}</pre>"
    )
    links = [{**x, "href": _as_html(x["href"])} for x in feature.get("links", [])]
    return _page(title, body, links)
