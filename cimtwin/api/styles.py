"""``/styles``: the MapLibre style documents kept in :mod:`cimtwin.styles`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from cimtwin import styles
from cimtwin.api.tiles import base_url

router = APIRouter(tags=["styles"])


@router.get("/styles", summary="Available MapLibre styles")
async def list_styles(request: Request) -> dict:
    root = base_url(request)
    return {"styles": [{"id": n, "url": f"{root}/styles/{n}.json"} for n in styles.names()]}


@router.get("/styles/{name}.json", summary="A MapLibre style document")
async def style(request: Request, name: str) -> dict:
    try:
        return styles.render(name, base_url(request))
    except KeyError as exc:
        raise HTTPException(
            404, f"no style {name!r}; available: {', '.join(styles.names())}") from exc
