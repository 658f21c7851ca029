"""Request field types shared by the use-case routers (grids, districts, pipelines), and
checks every request gets (NUL characters, which PostgreSQL refuses in text).

Their coordinates are always (x, y): longitude, latitude in CRS84 and EPSG:4490, easting,
northing in the storage CRS; each request names its CRS.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import HTTPException, Request
from pydantic import Field

from cimtwin.api.errors import invalid

Finite = Annotated[float, Field(allow_inf_nan=False)]
Position = Annotated[
    list[Finite],
    Field(min_length=2, max_length=3, description="x, y[, z]: lon, lat or east, north"),
]

NUL_ESCAPE = b"\\u0000"


def shown(text: str, limit: int = 40) -> str:
    """``repr`` of a client's value for an error message, cut short: an error must not echo
    a 5 000-digit number or a megabyte of text back."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where in parsed JSON a key or a string holds a NUL character (dotted paths)."""
    found: list[str] = []
    if isinstance(value, str):
        if "\x00" in value:
            found.append(path or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                found.append(here.replace("\x00", "\\u0000"))
            found += nul_paths(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += nul_paths(v, f"{path}.{i}" if path else str(i))
    return found


def _nul_error(names: list[str]) -> HTTPException:
    shown_names = ", ".join(dict.fromkeys(names[:10]))
    return invalid(
        f"{shown_names}: NUL characters (\\u0000) are not allowed in text "
        "(PostgreSQL cannot store them)"
    )


async def no_nul_characters(request: Request) -> None:
    """App-wide dependency: 422 naming the parameter or body field that holds a NUL
    character, before any of them reaches PostgreSQL (which refuses NUL in text).

    Bodies are looked at only when the route takes a JSON model (FastAPI has read them
    already, so this costs no second read); ``/grids/assign`` streams its own body and stores
    none of it."""
    bad = [k for k, v in request.path_params.items() if "\x00" in str(v)]
    if b"%00" in request.scope.get("query_string", b""):
        bad += [k for k, v in request.query_params.multi_items() if "\x00" in k + v]
    if bad:
        raise _nul_error([b.replace("\x00", "\\u0000") for b in bad])
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return
    body = await request.body()
    if NUL_ESCAPE not in body:
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # not JSON: the route's own validation answers
    if found := nul_paths(parsed):
        raise _nul_error(found)
