"""3D Tiles: ``GET /3dtiles`` lists the tilesets that ``cimtwin tiles build-3d`` wrote under
``CIMTWIN_TILES_DIR`` (one folder per tileset, named by its id, holding a ``tileset.json``);
``GET /3dtiles/{id}/{path}`` serves their files (tileset.json, glb contents, subtrees).

``CIMTWIN_TILES_DIR`` is a folder or the fsspec URL a build wrote to with ``--out``
(``s3://bucket/prefix``, storage options in ``CIMTWIN_TILES_STORAGE_OPTIONS``): every API
server of a bureau then serves what the Dask workers uploaded, with no shared disk.

Files, not database rows: the build wrote them, the service only reads. Each answer has a
strong ETag: from a local file's size and modification time (a build that leaves a content
untouched leaves its ETag too, so viewers revalidate with a 304), from an object's bytes (the
build writes identical bytes for an unchanged tile). JSON and glb go gzip when the client
takes it, and reads follow the same access rule as the vector tiles.

Paths are confined: a tileset id must match :data:`ID_PATTERN`, a path is made of plain
segments (no ``..``, no empty or dot segment, no backslash or NUL), only the file kinds of
:data:`MEDIA_TYPES` are served (no hidden files, not the build's manifest), and the resolved
file (symlinks followed) must lie inside the resolved tileset folder; anything else is a 404
(400 for a malformed path). An object store has no symlinks, and its keys are the same plain
segments. A store that does not answer is a 503 naming it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from isal import igzip
from starlette.routing import Route

from cimtwin.api.auth import check_read, require_read
from cimtwin.api.inputs import shown
from cimtwin.api.responses import accepts_gzip
from cimtwin.api.tiles import base_url
from cimtwin.settings import Settings
from cimtwin.spatial.catalogue import BY_ID
from cimtwin.tiles.store import Store, open_store

log = logging.getLogger(__name__)

router = APIRouter(tags=["3dtiles"], dependencies=[Depends(require_read)])

#: a tileset id: the folder name the build uses (a layer id such as ``buildings``)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
TILESET = "tileset.json"
JSON_TYPE = "application/json"
#: the file kinds a tileset may hold, and how each is sent; other files are not served
MEDIA_TYPES = {
    ".json": JSON_TYPE,
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".subtree": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".b3dm": "application/octet-stream",
    ".i3dm": "application/octet-stream",
    ".pnts": "application/octet-stream",
    ".cmpt": "application/octet-stream",
    ".terrain": "application/vnd.quantized-mesh",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ktx2": "image/ktx2",
}
#: not sent gzip-compressed: images are compressed already. Everything else is, when the
#: client accepts it: ISA-L level 1 takes the sample's glb contents to 31-55 % of their size
#: (components 18.6 -> 6.7 MB) at about 4 ms a MB, once per file version (:class:`GzipCache`)
PRECOMPRESSED = {"image/png", "image/jpeg", "image/webp", "image/ktx2"}
MAX_PATH_CHARS = 1024
#: the build's own bookkeeping beside tileset.json (``cimtwin.tiles.threed.build.MANIFEST``):
#: not part of the tileset, not served
BUILD_FILES = frozenset({"build.json"})
#: titles of tilesets that are not a vector layer of the catalogue
TITLES = {"terrain": "Terrain (DEM)"}


#: how long the list of an object store's tilesets is kept (one LIST and a HEAD per tileset)
REMOTE_LIST_SECONDS = 5.0


def tiles_root(settings: Settings) -> Store:
    """Where the 3D build writes (``CIMTWIN_TILES_DIR``): a folder, relative to the working
    directory (which ``make run`` sets to the project), or an fsspec URL."""
    return open_store(settings.tiles_dir)


def store_unavailable(store: Store, exc: BaseException) -> HTTPException:
    """The object store holding the tilesets did not answer: a 503, as for the database."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("3D tiles store %s: %s", store.url, detail)
    return HTTPException(
        503, f"the 3D tiles store {store.url} did not answer", headers={"Retry-After": "5"}
    )


# --- the list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Title:
    stamp: tuple
    title: str


_titles: dict[str, _Title] = {}


def _title(tileset_id: str, path: str, stamp: tuple, read: Any) -> str:
    """The tileset's own title (``asset.extras.title``), else the layer's title from the
    catalogue, else the id; cached per file version (an explicit tileset.json can be large).
    ``read()`` gives the tileset.json's bytes."""
    cached = _titles.get(path)
    if cached is not None and cached.stamp == stamp:
        return cached.title
    title = None
    try:
        doc = json.loads(read())
        extras = doc.get("asset", {}).get("extras", {}) if isinstance(doc, dict) else {}
        if isinstance(extras, dict) and isinstance(extras.get("title"), str):
            title = extras["title"]
    except (OSError, ValueError, AttributeError):
        pass  # unreadable or mid-write: the registry's title will do
    if title is None:
        layer = BY_ID.get(tileset_id)
        title = layer.title if layer else TITLES.get(tileset_id, tileset_id)
    _titles[path] = _Title(stamp, title)
    return title


def list_tilesets(store: Store) -> list[tuple[str, str]]:
    """(id, title) of each folder of the store that holds a tileset.json, sorted by id."""
    if not store.local:
        return _listed.get(store)
    return _list_folders(Path(store.root))


def _list_folders(root: Path) -> list[tuple[str, str]]:
    found = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if not ID_PATTERN.fullmatch(entry.name) or not entry.is_dir():
            continue
        path = Path(entry.path) / TILESET
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = (st.st_size, st.st_mtime_ns)
        found.append((entry.name, _title(entry.name, str(path), stamp, path.read_bytes)))
    return found


def _list_remote(store: Store) -> list[tuple[str, str]]:
    """The tilesets of an object store: one listing of its folders, one HEAD per tileset.json
    (its size and ETag or modification time say whether the cached title still holds)."""
    found = []
    try:
        for name in store.subfolders():
            if not ID_PATTERN.fullmatch(name):
                continue
            key = store.path(f"{name}/{TILESET}")
            try:
                info = store.fs.info(key)
            except FileNotFoundError:
                continue
            if info.get("type") == "directory":
                continue
            version = info.get("ETag") or info.get("LastModified") or info.get("mtime") or ""
            stamp = (int(info.get("size") or 0), str(version))
            title = _title(
                name, f"{store.protocol}://{key}", stamp, partial(store.fs.cat_file, key)
            )
            found.append((name, title))
    except HTTPException:
        raise
    except Exception as exc:  # the filesystem's own errors (botocore, aiohttp, ...)
        raise store_unavailable(store, exc) from None
    return found


class _RemoteListings:
    """Each object store's tileset list, kept :data:`REMOTE_LIST_SECONDS`: a viewer page
    asks for it on every load, and a bucket's listing costs requests."""

    def __init__(self) -> None:
        self._lists: dict[Store, tuple[float, list[tuple[str, str]]]] = {}

    def get(self, store: Store) -> list[tuple[str, str]]:
        now = time.monotonic()
        hit = self._lists.get(store)
        if hit is not None and now - hit[0] < REMOTE_LIST_SECONDS:
            return hit[1]
        found = _list_remote(store)
        if len(self._lists) > 16:
            self._lists.clear()
        self._lists[store] = (now, found)
        return found

    def clear(self) -> None:
        self._lists.clear()


_listed = _RemoteListings()


@router.get("/3dtiles", summary="The 3D tilesets this service serves (OGC 3D Tiles 1.1)")
async def tilesets(request: Request) -> list[dict[str, str]]:
    """Each tileset built under ``CIMTWIN_TILES_DIR``: its id, title and the absolute URL of
    its tileset.json (what ``Cesium3DTileset.fromUrl`` takes)."""
    found = await asyncio.to_thread(list_tilesets, request.app.state.tiles_store)
    base = base_url(request)
    return [{"id": i, "title": t, "url": f"{base}/3dtiles/{i}/{TILESET}"} for i, t in found]


# --- the files ------------------------------------------------------------------------------


def checked_path(path: str) -> tuple[str, ...]:
    """The plain segments of a requested path; 400 for a path that tries to leave its folder
    or could mean different files on different systems."""
    if len(path) > MAX_PATH_CHARS:
        raise HTTPException(400, f"path longer than {MAX_PATH_CHARS} characters")
    if "\x00" in path or "\\" in path:
        raise HTTPException(400, "NUL characters and backslashes are not allowed in a path")
    parts = tuple(path.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise HTTPException(400, f"path {shown(path)} has an empty, '.' or '..' segment")
    return parts


@dataclass(frozen=True)
class TileFile:
    body: bytes
    etag: str
    media_type: str


def read_tile_file(store: Store, tileset_id: str, parts: tuple[str, ...]) -> TileFile:
    """The file of a tileset in a folder (:func:`_read_local`) or an object store
    (:func:`_read_remote`); only the file kinds of :data:`MEDIA_TYPES`, never a hidden file
    (a build's half-written ``.x.tmp``) or the build's manifest."""
    if not ID_PATTERN.fullmatch(tileset_id):
        raise HTTPException(404, f"unknown 3D tileset {shown(tileset_id)}")
    if store.local:
        known = (Path(store.root) / tileset_id / TILESET).is_file()
    else:  # from the kept list: not a request to the store per file
        known = any(i == tileset_id for i, _ in list_tilesets(store))
    if not known:
        raise _unknown(store, tileset_id)
    media_type = MEDIA_TYPES.get(os.path.splitext(parts[-1])[1].lower())
    missing = HTTPException(404, f"no file {shown('/'.join(parts))} in 3D tileset {tileset_id!r}")
    hidden = any(p.startswith(".") for p in parts) or (len(parts) == 1 and parts[0] in BUILD_FILES)
    if media_type is None or hidden:
        raise missing
    if store.local:
        return _read_local(Path(store.root) / tileset_id, parts, media_type, missing)
    return _read_remote(store, tileset_id, parts, media_type, missing)


def _unknown(store: Store, tileset_id: str) -> HTTPException:
    known = ", ".join(i for i, _ in list_tilesets(store)) or "none (run `cimtwin tiles build-3d`)"
    return HTTPException(404, f"unknown 3D tileset {shown(tileset_id)}; known: {known}")


def _read_remote(
    store: Store, tileset_id: str, parts: tuple[str, ...], media_type: str, missing: HTTPException
) -> TileFile:
    """One GET of the object; its ETag is a hash of the bytes read, so a tag always names the
    bytes it came with, even while a build replaces the object."""
    try:
        body = store.fs.cat_file(store.path("/".join((tileset_id, *parts))))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise missing from None
    except Exception as exc:  # the filesystem's own errors (botocore, aiohttp, ...)
        raise store_unavailable(store, exc) from None
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return TileFile(body, f'"{len(body):x}-{digest}"', media_type)


def _read_local(
    folder: Path, parts: tuple[str, ...], media_type: str, missing: HTTPException
) -> TileFile:
    """The file, confined to its tileset's folder (symlinks resolved before the check), with
    an ETag from the size and mtime of the very file that was read (fstat of the open file,
    so a build that renames a new version into place cannot pair old bytes and a new tag)."""
    base = folder.resolve()
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base):
        raise missing  # a symlink pointing out of the tileset
    try:
        with open(target, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise missing
            body = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        raise missing from None
    return TileFile(body, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', media_type)


class GzipCache:
    """Compressed files by ETag: a tileset.json and the contents near the start view are
    asked for by every viewer that opens them, and compressing each once is enough. Bounded
    by total size, least recently used out."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, key: tuple[str, str], body: bytes) -> bytes:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        gz = igzip.compress(body, compresslevel=1, mtime=0)
        if len(gz) <= self.max_bytes // 4:
            self._items[key] = gz
            self.size += len(gz)
            while self.size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)
        return gz


_gzip_cache = GzipCache()


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: ``W/"x"`` matches ``"x"``; ``*`` matches all."""
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


async def tile_file(request: Request) -> Response:
    """``GET /3dtiles/{id}/{path}``: a file of a tileset.

    A plain Starlette endpoint like the vector tile route: CesiumJS asks for hundreds of
    contents per view and FastAPI's machinery would cost more than reading the file. It checks
    reads itself (:func:`check_read`); errors answer through the app-wide handlers."""
    await check_read(request)
    tileset_id, path = request.path_params["id"], request.path_params["path"]
    if "\x00" in tileset_id:
        raise HTTPException(400, "NUL characters are not allowed in a tileset id")
    parts = checked_path(path)
    f = await asyncio.to_thread(read_tile_file, request.app.state.tiles_store, tileset_id, parts)
    compressible = f.media_type not in PRECOMPRESSED
    gzip = compressible and accepts_gzip(request.headers.get("accept-encoding", ""))
    # a strong tag names one representation: the gzip body has its own
    etag = f'{f.etag[:-1]}-gz"' if gzip else f.etag
    headers = {"ETag": etag, "Cache-Control": request.app.state.cache_control}
    if compressible:
        headers["Vary"] = request.app.state.vary
    elif not request.app.state.settings.open_reads:
        headers["Vary"] = "Authorization, X-API-Key"
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if gzip:
        headers["Content-Encoding"] = "gzip"
        body = _gzip_cache.get((f"{tileset_id}/{path}", f.etag), f.body)
        return Response(body, media_type=f.media_type, headers=headers)
    return Response(f.body, media_type=f.media_type, headers=headers)


FILE_PATH = "/3dtiles/{id}/{path:path}"
file_route = Route(FILE_PATH, tile_file, methods=["GET"], name="3dtiles_file")

_FILE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "tileset id, as `GET /3dtiles` lists it",
        "schema": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
    },
]
_RESPONSES = {
    "304": {"description": "not modified"},
    "400": {"description": "a path with '..', empty segments, backslashes or NUL"},
    "401": {"description": "reads need an API key"},
    "404": {"description": "unknown tileset or no such file in it"},
}
OPENAPI_PATHS = {
    "/3dtiles/{id}/tileset.json": {
        "get": {
            "tags": ["3dtiles"],
            "summary": "The tileset.json of a 3D tileset (3D Tiles 1.1; gzip when accepted)",
            "operationId": "tileset_json",
            "parameters": _FILE_PARAMETERS,
            "responses": {
                "200": {"description": "the tileset", "content": {JSON_TYPE: {}}},
                **_RESPONSES,
            },
        }
    },
    "/3dtiles/{id}/{path}": {
        "get": {
            "tags": ["3dtiles"],
            "summary": "A file of a 3D tileset: glb content, nested tileset JSON, subtree",
            "operationId": "tileset_file",
            "parameters": [
                _FILE_PARAMETERS[0],
                {
                    "name": "path",
                    "in": "path",
                    "required": True,
                    "description": "the file's path inside the tileset, as its tileset.json "
                    "or subtrees name it (may contain '/')",
                    "schema": {"type": "string"},
                },
                _FILE_PARAMETERS[1],
            ],
            "responses": {
                "200": {
                    "description": "the file (gzip when accepted, images as they are)",
                    "content": {t: {} for t in dict.fromkeys(MEDIA_TYPES.values())},
                },
                **_RESPONSES,
            },
        }
    },
}
