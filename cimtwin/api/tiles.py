"""Vector tiles: ``/tiles/{layers}/{z}/{x}/{y}.mvt`` (one or several layers in one tile) and
their TileJSON, served from PostGIS through the change-aware cache, with ETag and gzip."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.routing import Route

from cimtwin.api.auth import check_read, require_read
from cimtwin.api.db import reads_on_primary
from cimtwin.api.inputs import shown
from cimtwin.spatial.catalogue import BY_ID, Layer
from cimtwin.spatial.layer_extent import extent_cache, layer_extent, rounded_outward
from cimtwin.tiles.cache import TileCache, gunzip_tile, make_entry
from cimtwin.tiles.mvt import MAX_ZOOM, TileRequest, layer_query

router = APIRouter(tags=["tiles"], dependencies=[Depends(require_read)])
MVT = "application/vnd.mapbox-vector-tile"
MAX_LAYERS_PER_TILE = 16


def parse_layers(layers: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against the catalogue (404 names the unknown one)."""
    ids = tuple(dict.fromkeys(p.strip() for p in layers.split(",") if p.strip()))
    if not ids:
        raise HTTPException(404, "no layer named")
    if len(ids) > MAX_LAYERS_PER_TILE:
        raise HTTPException(400, f"at most {MAX_LAYERS_PER_TILE} layers in one tile")
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        raise HTTPException(
            404, f"unknown layer(s) {', '.join(unknown)}; known: {', '.join(sorted(BY_ID))}"
        )
    return ids


async def _render_layer(request: Request, layer: Layer, tile: TileRequest) -> bytes:
    settings = request.app.state.settings
    q = layer_query(layer, tile, settings.tile_max_features)
    if q is None:
        return b""
    statement, params = q
    reads = request.app.state.reads
    async with (
        request.app.state.tile_slots,
        reads.read_connection(reads_on_primary(request)) as conn,
    ):
        # binary: the tile comes back as raw bytes, not hex text that both ends must convert
        cur = await conn.execute(statement, params, prepare=True, binary=True)
        row = await cur.fetchone()
    return bytes(row[0]) if row and row[0] else b""


async def render_tile(request: Request, ids: tuple[str, ...], tile: TileRequest) -> bytes:
    """All layers of one tile, queried concurrently; MVT layers concatenate into one tile."""
    parts = await asyncio.gather(*(_render_layer(request, BY_ID[i], tile) for i in ids))
    return b"".join(parts)


#: digits read of a tile number (x and y < 2**MAX_ZOOM need 8): longer is a 422, shorter but
#: too large a 404 for a tile that does not exist
MAX_TILE_DIGITS = 32


def _tile_number(name: str, text: str, upper: int | None = None) -> int:
    """A tile z, x or y; 422 otherwise (checked for length first: ``int()`` of thousands of
    digits costs time and raises)."""
    if (
        len(text) > MAX_TILE_DIGITS
        or not text.isascii()
        or not text.isdigit()
        or (upper is not None and int(text) > upper)
    ):
        limit = f"0..{upper}" if upper is not None else ">= 0"
        raise HTTPException(422, f"{name} must be an integer {limit}, not {shown(text)}")
    return int(text)


async def tile(request: Request) -> Response:
    """``GET /tiles/{layers}/{z}/{x}/{y}.mvt``.

    A plain Starlette endpoint rather than a FastAPI route: it is the hottest path of the
    service and FastAPI's parameter and dependency machinery cost more CPU per tile than the
    rest of the Python work together. It validates its own input; its errors answer through
    the app-wide handlers (:mod:`cimtwin.api.errors`); OpenAPI describes it through
    :data:`OPENAPI_PATHS`."""
    p = request.path_params
    await check_read(request)
    ids = parse_layers(p["layers"])
    z = _tile_number("z", p["z"], MAX_ZOOM)
    x, y = _tile_number("x", p["x"]), _tile_number("y", p["y"])
    if x >> z or y >> z:
        raise HTTPException(404, f"tile {z}/{x}/{y} does not exist (x and y < {1 << z})")
    t = TileRequest(z, x, y)
    cache: TileCache = request.app.state.tile_cache
    key = (ids, z, x, y)
    entry = await cache.get(key) if cache.enabled else None
    if entry is None:
        token = await cache.token()  # before rendering: put() refuses if a change came between
        entry = make_entry(ids, t, await render_tile(request, ids, t))
        await cache.put(key, entry, token)
    headers = {
        "ETag": entry.etag,
        "Cache-Control": request.app.state.cache_control,
        "Vary": request.app.state.vary,
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and entry.etag in [v.strip() for v in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    if entry.raw_size == 0:
        return Response(status_code=204, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return Response(entry.body_gz, media_type=MVT, headers=headers)
    return Response(gunzip_tile(entry.body_gz), media_type=MVT, headers=headers)


TILE_PATH = "/tiles/{layers}/{z}/{x}/{y}.mvt"
tile_route = Route(TILE_PATH, tile, methods=["GET"], name="tile")

OPENAPI_PATHS = {
    TILE_PATH: {
        "get": {
            "tags": ["tiles"],
            "summary": "Vector tile of one or more layers (comma-separated)",
            "operationId": "tile",
            "parameters": [
                {
                    "name": "layers",
                    "in": "path",
                    "required": True,
                    "description": "layer id, or several comma-separated",
                    "schema": {"type": "string"},
                },
                {
                    "name": "z",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM},
                },
                {
                    "name": "x",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "y",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {"description": "the tile (gzip when accepted)", "content": {MVT: {}}},
                "204": {"description": "no feature in this tile"},
                "304": {"description": "not modified"},
                "401": {"description": "reads need an API key"},
                "404": {"description": "unknown layer or tile outside the zoom level"},
                "422": {"description": "z, x or y not an integer in range"},
            },
        }
    }
}


def base_url(request: Request) -> str:
    public = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


@router.get(
    "/tiles/{layers}/tilejson.json",
    summary="TileJSON 3.0 of one or more layers",
    responses={
        400: {"description": f"more than {MAX_LAYERS_PER_TILE} layers"},
        503: {"description": "database unavailable (the layers' extent is read from it)"},
    },
)
async def tilejson(request: Request, layers: str) -> dict:
    ids = parse_layers(layers)
    chosen = [BY_ID[i] for i in ids]
    bounds = await _bounds(request, chosen)
    url = f"{base_url(request)}/tiles/{','.join(ids)}/{{z}}/{{x}}/{{y}}.mvt"
    return {
        "tilejson": "3.0.0",
        "name": ",".join(ids),
        "description": "; ".join(layer.description for layer in chosen),
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": min(layer.minzoom for layer in chosen),
        "maxzoom": 22,
        "bounds": bounds,
        "center": [
            (bounds[0] + bounds[2]) / 2,
            (bounds[1] + bounds[3]) / 2,
            max(14, min(layer.minzoom for layer in chosen)),
        ],
        "vector_layers": [
            {
                "id": layer.id,
                "description": layer.title,
                "minzoom": layer.minzoom,
                "maxzoom": 22,
                "fields": {p: _tilejson_type(layer.column_type(p)) for p in layer.tile_fields},
            }
            for layer in chosen
        ],
    }


def _tilejson_type(kind: str) -> str:
    return {"integer": "Number", "number": "Number", "datetime": "String"}.get(kind, "String")


async def _bounds(request: Request, layers: list[Layer]) -> list[float]:
    """Extent of the layers' data in lon/lat, as their collections give it (the whole Web
    Mercator area when they are empty)."""
    cache = extent_cache(request.app.state)
    async with request.app.state.pool.connection() as conn:
        boxes = [
            e.lonlat
            for layer in layers
            if (e := await layer_extent(conn, layer, cache)).lonlat is not None
        ]
    if not boxes:
        return [-180.0, -85.0511, 180.0, 85.0511]
    return rounded_outward(
        (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
    )
