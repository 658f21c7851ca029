"""SQL and JSON helpers the pipeline analyses share: table names, SQL
fragments for pipe sizes and CRS84 output, rounding, and the errors the API turns into
HTTP answers.
"""

from __future__ import annotations

import math
from functools import lru_cache

from cimtwin.spatial.base import SRID
from cimtwin.spatial.pipeline_network import pipe_size_mm_sql
from cimtwin.spatial.sql_toolkit import T

# the toolkit's runners under the names the analyses use (their results are often 'rows')
from cimtwin.spatial.sql_toolkit import rows as fetch_all  # noqa: F401
from cimtwin.spatial.sql_toolkit import rows_nojit as fetch_all_nojit  # noqa: F401

SEG = T.pipeline_segment
NODE = T.pipeline_node
VALVE = T.pipeline_valve
BUILDINGS = T.building
BATCH = T.import_batch


#: horizontal and vertical half sizes of a pipe (m): round pipes by diameter, sections by width
#: and height (the pipe's size, :func:`pipe_size_mm_sql`); outer walls are taken at the nominal
#: size (wall thickness is not surveyed)
HALF_W = "coalesce({t}.diameter_mm, {t}.width_mm, 0) / 2000.0"
LONLAT = "ST_AsGeoJSON(ST_Transform({g}, 4326), 7)"


def half_w(t: str) -> str:
    return HALF_W.format(t=t)


def half_h(t: str) -> str:
    return f"coalesce({pipe_size_mm_sql(t)}, 0) / 2000.0"


def lonlat(g: str) -> str:
    return LONLAT.format(g=g)


def wkb_geom(name: str) -> str:
    return f"ST_GeomFromWKB(%({name})s, {SRID})"


def size_text(diameter: float | None, width: float | None, height: float | None) -> str | None:
    if diameter:
        return f"DN{diameter:g}"
    if width and height:
        return f"{width:g}X{height:g}"
    return None


def rounded(v: float | None, nd: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


MAX_IDS = 100_000


@lru_cache(maxsize=1)
def _to_lonlat():
    from cimtwin.spatial.crs import transformer

    return transformer(SRID, "OGC:CRS84")


def to_lonlat(x: float, y: float) -> list[float]:
    lon, lat = _to_lonlat().transform(x, y)
    return [round(float(lon), 7), round(float(lat), 7)]


def wkb_lonlat(wkb: bytes | memoryview | None) -> list[float] | None:
    if wkb is None:
        return None
    import shapely

    g = shapely.from_wkb(bytes(wkb))
    if g.is_empty:
        return None
    return to_lonlat(g.x, g.y)
