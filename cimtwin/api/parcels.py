"""Land parcels (地块): a GeoJSON listing and the planning report of one parcel.

GET /parcels?bbox=&land_use=&limit=&offset=
GET /parcels/{id}/report        (id or parcel code)
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, field_validator

from cimtwin.api.answers import ParcelReport, answer
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.errors import invalid
from cimtwin.api.geojson import feature_json
from cimtwin.api.inputs import DEFAULT_LIMIT, MAX_LIMIT, BBoxQuery
from cimtwin.api.responses import (
    FEATURE_COLLECTION,
    feature_collection,
    json_response,
    summary_cache,
)
from cimtwin.spatial.parcel_queries import (
    PARCEL_PROPERTIES,
    find_parcel,
    list_parcels,
    parcel_report,
    unknown_land_uses,
)

router = APIRouter(tags=["parcels"], dependencies=[Depends(require_read)])
LAND_USE = re.compile(r"[A-Z][A-Z0-9]{0,3}")
MAX_LAND_USES = 20


class ParcelQuery(BBoxQuery):
    model_config = ConfigDict(extra="forbid")

    land_use: str | None = Field(
        None,
        max_length=200,
        description=(
            "GB 50137 code(s), comma-separated; a code takes its subclasses (R: R1, R2, R21 ...)"
        ),
    )
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10**9)

    @field_validator("land_use")
    @classmethod
    def codes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        codes = [c.strip().upper() for c in value.split(",") if c.strip()]
        if not codes:
            raise ValueError("empty: give GB 50137 codes such as R2 or B1,B2")
        if len(codes) > MAX_LAND_USES:
            raise ValueError(f"at most {MAX_LAND_USES} codes")
        bad = [c for c in codes if not LAND_USE.fullmatch(c)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: not GB 50137 codes (a letter, then up to 3 "
                "letters or digits, e.g. R2, B1, S41)"
            )
        return ",".join(dict.fromkeys(codes))


@router.get("/parcels", summary="Land parcels as GeoJSON", responses={200: FEATURE_COLLECTION})
async def parcels(query: Annotated[ParcelQuery, Query()], conn: Conn) -> Response:
    try:
        box = query.storage_box()
    except ValueError as exc:
        raise invalid(str(exc)) from None
    codes = query.land_use.split(",") if query.land_use else []
    unknown = await unknown_land_uses(conn, codes)
    if unknown:
        raise HTTPException(422, f"land_use: {', '.join(unknown)} match(es) no GB 50137 class")
    found, matched = await list_parcels(conn, box, codes, query.limit, query.offset)
    features = [
        feature_json(r[0], r[1], dict(zip(PARCEL_PROPERTIES, r[2:], strict=True))) for r in found
    ]
    return feature_collection(features, {"numberMatched": matched})


@router.get(
    "/parcels/{parcel}/report",
    summary="Planning report of one parcel",
    responses=answer(ParcelReport, "the report"),
)
async def report(
    request: Request,
    parcel: Annotated[
        str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="parcel id or parcel code")
    ],
    conn: Conn,
) -> Response:
    """Area, the buildings on it (covered or more than half inside), their floor area, actual
    against planned plot ratio and tallest building against the height limit (with exceed
    flags), the pipes crossing it by network with their length inside, its city components.
    Cached per process until the next import."""
    pid = await find_parcel(conn, parcel)
    if pid is None:
        raise HTTPException(404, f"no parcel with id or code {parcel!r}")
    cache = summary_cache(request)
    if cache is None:
        found = await parcel_report(conn, pid)
    else:  # parcels, buildings, pipes and components change only by imports
        found = await cache.get(conn, ("parcel", pid), lambda: parcel_report(conn, pid))
    if found is None:  # deleted in between
        raise HTTPException(404, f"no parcel with id or code {parcel!r}")
    return json_response(found)
