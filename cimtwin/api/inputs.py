"""Request field types shared by the use-case routers (grids, districts, pipelines).

Their coordinates are always (x, y): longitude, latitude in CRS84 and EPSG:4490, easting,
northing in the storage CRS; each request names its CRS.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
Position = Annotated[list[Finite], Field(min_length=2, max_length=3,
                                         description="x, y[, z]: lon, lat or east, north")]
