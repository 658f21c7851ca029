"""``/styles``: the MapLibre style documents kept in :mod:`cimtwin.styles`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from cimtwin import styles
from cimtwin.api.inputs import shown
from cimtwin.api.tiles import base_url

router = APIRouter(tags=["styles"])


@router.get("/styles", summary="Available MapLibre styles")
async def list_styles(request: Request) -> dict:
    root = base_url(request)
    return {"styles": [{"id": n, "url": f"{root}/styles/{n}.json"} for n in styles.names()]}


@router.get("/legends", summary="Legends of the map themes (colours, labels, keyed property)")
async def legends() -> dict:
    """The colour tables the styles use, for legends and for clients that draw the themes
    themselves (the 3D viewer drapes the vector tiles with them)."""
    from cimtwin.styles.legend import legends

    return {"themes": legends()}


@router.get("/styles/{name}.json", summary="A MapLibre style document")
async def style(request: Request, name: str) -> dict:
    try:
        return styles.render(name, base_url(request))
    except KeyError as exc:
        raise HTTPException(
            404, f"no style {name!r}; available: {', '.join(styles.names())}"
        ) from exc


@router.get(
    "/fonts/{fontstack}/{start}-{end}.pbf",
    summary="SDF glyphs for map labels",
    responses={
        200: {
            "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "glyph PBF",
        },
        400: {"description": "a range that is not START-(START+255) with START % 256 == 0"},
    },
)
async def glyphs(
    request: Request,
    fontstack: str,
    start: int = Path(ge=0, le=65280),
    end: int = Path(ge=255, le=65535),
) -> Response:
    from cimtwin.styles.glyphs import FONTS, glyph_range, known_stack

    if start % 256 or end != start + 255:
        raise HTTPException(400, "glyph ranges are 256 code points: START-(START+255)")
    canonical = known_stack(fontstack)
    if canonical is None:  # answered before any rendering: made-up stacks cost nothing
        raise HTTPException(
            404, f"no known font in stack {shown(fontstack)}; known: {', '.join(FONTS)}"
        )
    body = await run_in_threadpool(glyph_range, canonical, start)
    return Response(
        body,
        media_type="application/x-protobuf",
        # closed reads: only key holders got them, so no shared proxy may keep them
        headers={
            "Cache-Control": ("public" if request.app.state.settings.open_reads else "private")
            + ", max-age=86400"
        },
    )
