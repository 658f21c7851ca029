"""Request field types shared by the use-case routers (grids, districts, pipelines), and
checks every request gets (NUL characters, which PostgreSQL refuses in text).

Their coordinates are always (x, y): longitude, latitude in CRS84 and EPSG:4490, easting,
northing in the storage CRS; each request names its CRS.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


# --- request bodies -----------------------------------------------------------------------

#: positions (vertices) one polygon, multipolygon or line of a request may have
MAX_VERTICES = 10_000
_KEYS: dict[type, frozenset[str]] = {}


def _known_keys(model: type[BaseModel]) -> frozenset[str]:
    keys = _KEYS.get(model)
    if keys is None:
        names = set(model.model_fields)
        names |= {f.alias for f in model.model_fields.values() if f.alias}
        keys = _KEYS[model] = frozenset(names)
    return keys


class StrictBody(BaseModel):
    """Base of every JSON body model: unknown keys are refused with one error naming the
    first few, before any field is validated. (``extra="forbid"`` alone makes pydantic build
    an error per key: a body of 80 000 stray keys cost half a second of the event loop.)"""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = _known_keys(cls)
            unknown = data.keys() - known
            if unknown:
                first = [shown(str(k)) for k in data if k in unknown][:5]
                more = f" ({len(unknown)} in all)" if len(unknown) > len(first) else ""
                raise ValueError(
                    f"unknown field(s) {', '.join(first)}{more}; "
                    f"the fields here are {', '.join(sorted(known))}"
                )
        return data


def count_positions(coordinates: Any, depth: int) -> int:
    """Positions in GeoJSON ``coordinates`` nested ``depth`` lists above the positions
    (1: a line, 2: a polygon, 3: a multipolygon), without looking into them; what is not a
    list counts as nothing (the model's own validation says what is wrong with it)."""
    if not isinstance(coordinates, list):
        return 0
    if depth <= 1:
        return len(coordinates)
    return sum(count_positions(c, depth - 1) for c in coordinates)


def check_vertex_count(coordinates: Any, depth: int, what: str) -> None:
    """ValueError naming :data:`MAX_VERTICES` when a geometry has more positions."""
    n = count_positions(coordinates, depth)
    if n > MAX_VERTICES:
        raise ValueError(
            f"{what} has {n} positions: at most {MAX_VERTICES} (vertices) per request geometry"
        )
