"""The one way from the twin's storage coordinates to the globe, for every 3D source.

Storage is (easting, northing) in the storage CRS with 1985 national heights. 3D Tiles want
earth-centred coordinates (EPSG:4978) from ellipsoidal heights. So, in float64 throughout:

1. ellipsoidal height h = H(1985) + ``CIMTWIN_HEIGHT_OFFSET_M`` + N(lon, lat), N from the geoid
   grid ``CIMTWIN_GEOID`` (EGM96 by default, about -3.2 m at Shenzhen North; ``none`` for 0);
2. (easting, northing, h) -> ECEF through pyproj (always_xy);
3. vertices relative to an east-north-up frame at the tile's centre, the frame written as the
   tile's ``transform``; only then float32, so a vertex keeps millimetres;
4. glTF is y-up: (east, north, up) is written as (east, up, -north), which CesiumJS turns back.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from cimtwin.errors import UserError
from cimtwin.settings import get_settings
from cimtwin.spatial import crs as crs_mod

#: where Debian's proj-data puts the geoid grids (pyproj's wheel carries none)
GRID_DIRS = ("/usr/share/proj", "/usr/local/share/proj")


def geoid_grid(name: str) -> Path | None:
    """The geoid grid file named by ``CIMTWIN_GEOID``: a path, or a file name looked up in
    PROJ_DATA and Debian's proj-data folder; None for ``none``."""
    if name.strip().lower() in ("", "none"):
        return None
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    dirs = [d for d in (os.environ.get("PROJ_DATA"), os.environ.get("PROJ_LIB")) if d]
    for folder in [*dirs, *GRID_DIRS]:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    looked = ", ".join([*dirs, *GRID_DIRS])
    raise UserError(
        f"CIMTWIN_GEOID: geoid grid {name!r} not found (looked in {looked}); "
        "install Debian's proj-data, give a path, or set CIMTWIN_GEOID=none"
    )


@lru_cache(maxsize=8)
def _geoid_transformer(path: str) -> Transformer:
    return Transformer.from_pipeline(f"+proj=vgridshift +grids={path} +multiplier=1")


def geoid_undulation(lon: np.ndarray, lat: np.ndarray, grid: Path | None) -> np.ndarray:
    """N (m): the geoid's height above the ellipsoid at each (lon, lat), 0 without a grid."""
    lon = np.asarray(lon, dtype=np.float64)
    if grid is None:
        return np.zeros_like(lon)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.size == 1:  # pyproj's one-point path would take the 1-element arrays as floats
        _, _, one = _geoid_transformer(str(grid)).transform(
            float(lon.flat[0]), float(lat.flat[0]), 0.0
        )
        n = np.full(lon.shape, one)
    else:
        _, _, n = _geoid_transformer(str(grid)).transform(lon, lat, np.zeros_like(lon))
    n = np.asarray(n, dtype=np.float64)
    if not np.all(np.isfinite(n)):
        raise UserError(f"CIMTWIN_GEOID: grid {grid} does not cover every position")
    return n


@lru_cache(maxsize=4)
def _to_ecef(srid: int) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(srid).to_3d(), CRS.from_epsg(4978), always_xy=True)


@dataclass(frozen=True)
class Frame:
    """An east-north-up frame: ``matrix`` maps local (e, n, u) metres to ECEF (4x4)."""

    origin: np.ndarray  # ECEF of the frame's origin
    rotation: np.ndarray  # rows: east, north, up unit vectors in ECEF

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = self.origin
        return m

    def transform_list(self) -> list[float]:
        """The matrix as a 3D Tiles ``transform`` (16 numbers, column-major)."""
        return [float(v) for v in self.matrix.T.reshape(-1)]

    def to_local(self, ecef: np.ndarray) -> np.ndarray:
        """ECEF points (n, 3) as (e, n, u) in this frame, still float64."""
        return (np.asarray(ecef, dtype=np.float64) - self.origin) @ self.rotation.T


def enu_rotation(lon_deg: float, lat_deg: float) -> np.ndarray:
    """Rows: the east, north and up unit vectors at (lon, lat) on the ellipsoid, in ECEF."""
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
    return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])


class Placement:
    """Storage coordinates -> ellipsoidal heights -> ECEF -> a tile's ENU frame."""

    def __init__(
        self,
        geoid: str | None = None,
        height_offset_m: float | None = None,
        srid: int | None = None,
    ) -> None:
        settings = get_settings()
        self.grid = geoid_grid(settings.geoid if geoid is None else geoid)
        self.offset = settings.height_offset_m if height_offset_m is None else height_offset_m
        self.srid = srid or crs_mod.storage_srid()
        self._lonlat = crs_mod.transformer(self.srid, "EPSG:4326")

    @property
    def description(self) -> str:
        """How heights were placed, for the tileset's asset extras."""
        grid = self.grid.name if self.grid else "none"
        return f"EPSG:{self.srid} + 1985 heights; h = H + {self.offset:g} m + N({grid})"

    def lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = crs_mod.transform_arrays(self._lonlat, x, y)
        return np.asarray(lon, np.float64), np.asarray(lat, np.float64)

    def ellipsoidal(self, x: np.ndarray, y: np.ndarray, h1985: np.ndarray) -> np.ndarray:
        lon, lat = self.lonlat(x, y)
        return np.asarray(h1985, np.float64) + self.offset + geoid_undulation(lon, lat, self.grid)

    def ecef(self, positions: np.ndarray) -> np.ndarray:
        """(n, 3) storage positions (easting, northing, 1985 height) -> (n, 3) ECEF, float64."""
        p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        if len(p) == 0:
            return np.empty((0, 3))
        h = self.ellipsoidal(p[:, 0], p[:, 1], p[:, 2])
        if len(p) == 1:  # pyproj's one-point path would take the 1-element arrays as floats
            one = _to_ecef(self.srid).transform(float(p[0, 0]), float(p[0, 1]), float(h[0]))
            return np.array([one], dtype=np.float64)
        xs, ys, zs = _to_ecef(self.srid).transform(p[:, 0], p[:, 1], h)
        return np.column_stack([xs, ys, zs])

    def frame(self, x: float, y: float, h1985: float) -> Frame:
        """The ENU frame at a storage position (a tile's centre)."""
        origin = self.ecef(np.array([[x, y, h1985]]))[0]
        lon, lat = self.lonlat(np.array([x]), np.array([y]))
        return Frame(origin, enu_rotation(float(lon[0]), float(lat[0])))

    def region(
        self, box: tuple[float, float, float, float], hmin: float, hmax: float
    ) -> list[float]:
        """A 3D Tiles ``region`` (radians, ellipsoidal metres) covering a storage-CRS box and
        a 1985 height range: the box's edges are sampled, so the curved sides are covered."""
        x0, y0, x1, y1 = box
        t = np.linspace(0.0, 1.0, 9)
        xs = np.concatenate(
            [x0 + (x1 - x0) * t, np.full(9, x1), x0 + (x1 - x0) * t, np.full(9, x0)]
        )
        ys = np.concatenate(
            [np.full(9, y0), y0 + (y1 - y0) * t, np.full(9, y1), y0 + (y1 - y0) * t]
        )
        lon, lat = self.lonlat(xs, ys)
        n = geoid_undulation(lon, lat, self.grid)
        lo = float(hmin + self.offset + n.min()) - 0.01
        hi = float(hmax + self.offset + n.max()) + 0.01
        return [
            math.radians(float(lon.min())),
            math.radians(float(lat.min())),
            math.radians(float(lon.max())),
            math.radians(float(lat.max())),
            lo,
            hi,
        ]


def gltf_axes(local: np.ndarray) -> np.ndarray:
    """(e, n, u) -> glTF's y-up (e, u, -n), float32 for the vertex buffer."""
    local = np.asarray(local, dtype=np.float64)
    return np.column_stack([local[:, 0], local[:, 2], -local[:, 1]]).astype(np.float32)
