"""Where an IFC model lies on the map: finding its georeference and applying it to vertices.

The paths, in the order they are tried (the first that applies wins; the import says which):

1. ``--origin LON,LAT,H`` (with ``--rotation DEG``) given by the user: overrides all. The model's
   local origin goes to (LON, LAT) in the storage CRS's geographic datum (CGCS2000 for the
   Shenzhen CRS) at 1985 height H; its +X axis is turned DEG degrees counter-clockwise from
   east (the angle of IfcMapConversion's XAxisAbscissa/XAxisOrdinate; 0: X east, Y north).
2. ``IfcMapConversion`` (IFC4) / ``IfcMapConversionScaled`` (IFC4.3) with its
   ``IfcProjectedCRS``.
3. ``ePSet_MapConversion`` / ``ePSet_ProjectedCRS`` property sets on IfcProject or IfcSite
   (the IFC2x3 convention).
4. ``IfcSite`` RefLatitude / RefLongitude / RefElevation, turned by the model context's
   TrueNorth, at the model's local origin.

Paths 1 and 4 are made into a map conversion on an azimuthal equidistant projection centred on
the given point (true distances and true north there), so every path is one formula:

    E = Eastings  + s·fx·(x·cos θ) − s·fy·(y·sin θ)
    N = Northings + s·fx·(x·sin θ) + s·fy·(y·cos θ)
    H = OrthogonalHeight + s·fz·z

x, y, z in project length units; E, N, H in map units; θ from XAxisAbscissa/XAxisOrdinate;
fx, fy, fz the IFC4.3 scale factors (1 otherwise). s is the conversion's Scale read against the
units (:func:`effective_scale`): empty means 1 after converting project units to map units;
a Scale equal to that unit ratio already is the conversion (IfcOpenShell writes it so: a metre
model in a millimetre map has Scale 1000); a Scale near 1 with differing units is a grid scale
factor applied on top of the unit ratio; anything else is refused as ambiguous.

The map unit is IfcProjectedCRS.MapUnit (ePSet_ProjectedCRS.MapUnit), else the CRS's own axis
unit. Map coordinates then go to the storage CRS with pyproj (always_xy, float64, every vertex;
a compound CRS's horizontal part; no transformation at all when that part is the storage CRS).
A CRS with an empty name cannot be transformed: such a model is refused unless ``--crs`` names
the CRS the conversion is in, or ``--origin`` places it.

Heights: H (metres) is in the map CRS's vertical datum. It becomes a 1985 height by
``--height-datum``, else by what the file says (IfcProjectedCRS.VerticalDatum, the vertical
part of a compound CRS), else unchanged:

* ``1985`` (EPSG:5737, the storage heights): unchanged;
* ``geoid``: heights above the placement's geoid (``CIMTWIN_GEOID``, EGM96):
  H1985 = H − ``CIMTWIN_HEIGHT_OFFSET_M``;
* ``ellipsoidal``: H1985 = h − N(lon, lat) − offset, N from the same geoid grid -- the
  inverse of :class:`cimtwin.tiles.threed.placement.Placement`, the one placement path.

A vertical datum the file names but that is none of these (NG95 in the Luxembourg sample) is
taken unchanged with a warning in the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from cimtwin.errors import GeorefError

HEIGHT_DATUMS = ("1985", "geoid", "ellipsoidal")
#: how far (degrees) a model may reach beyond the storage CRS's area of use
AREA_MARGIN_DEG = 0.5


@dataclass(frozen=True)
class MapConversion:
    """The parameters of one map conversion (IfcMapConversion's, with Scale resolved)."""

    eastings: float = 0.0
    northings: float = 0.0
    height: float = 0.0
    x_abscissa: float = 1.0
    x_ordinate: float = 0.0
    scale: float = 1.0  # project length units -> map units, after effective_scale
    factor_x: float = 1.0
    factor_y: float = 1.0
    factor_z: float = 1.0

    @property
    def rotation_deg(self) -> float:
        """The local +X axis's angle counter-clockwise from the map's east axis."""
        return math.degrees(math.atan2(self.x_ordinate, self.x_abscissa))


def local_to_map(xyz: np.ndarray, conv: MapConversion) -> np.ndarray:
    """(n, 3) local coordinates in project length units -> (n, 3) map coordinates (map units).

    Pure float64 arithmetic; the rotation is normalised so a slightly non-unit direction in the
    file does not scale the model."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    norm = math.hypot(conv.x_abscissa, conv.x_ordinate)
    if norm == 0:
        raise GeorefError("XAxisAbscissa and XAxisOrdinate are both 0: no rotation can be read")
    c, s = conv.x_abscissa / norm, conv.x_ordinate / norm
    sx, sy, sz = conv.scale * conv.factor_x, conv.scale * conv.factor_y, conv.scale * conv.factor_z
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return np.column_stack(
        [
            conv.eastings + sx * c * x - sy * s * y,
            conv.northings + sx * s * x + sy * c * y,
            conv.height + sz * z,
        ]
    )


def effective_scale(scale: float | None, unit_ratio: float) -> tuple[float, str]:
    """The factor from project units to map units, and how the file's Scale was read.

    ``unit_ratio`` is metres per project unit / metres per map unit (0.001 for a millimetre
    model in a metre CRS)."""
    if scale is None or scale == 0:
        return unit_ratio, f"Scale empty: 1 after the unit conversion ({unit_ratio:g})"
    if math.isclose(unit_ratio, 1.0, rel_tol=1e-9):
        return scale, f"units agree; Scale {scale:g} as given"
    if math.isclose(scale, unit_ratio, rel_tol=0.05):
        return scale, f"Scale {scale:g} is the unit conversion ({unit_ratio:g}) itself"
    if 0.9 <= scale <= 1.1:
        return (
            scale * unit_ratio,
            f"Scale {scale:g} taken as a scale factor on top of the unit conversion "
            f"({unit_ratio:g})",
        )
    raise GeorefError(
        f"the map conversion's Scale {scale:g} is neither the unit conversion {unit_ratio:g} "
        "(project to map units) nor a scale factor near 1"
    )


def true_north_rotation(direction: tuple[float, float] | None) -> float:
    """The rotation (degrees, counter-clockwise) taking local axes to east/north, from a
    context's TrueNorth (the direction of north in local coordinates); 0 without one."""
    if direction is None or (direction[0] == 0 and direction[1] == 0):
        return 0.0
    return 90.0 - math.degrees(math.atan2(direction[1], direction[0]))


def rotation_axis(degrees: float) -> tuple[float, float]:
    """XAxisAbscissa, XAxisOrdinate of a rotation (counter-clockwise degrees)."""
    r = math.radians(degrees)
    return math.cos(r), math.sin(r)


def parse_origin(text: str) -> tuple[float, float, float]:
    """``LON,LAT[,H]`` -> floats, checked for range."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or not all(math.isfinite(v) for v in parts):
        raise GeorefError(f"--origin {text!r}: expected LON,LAT,H (degrees, degrees, metres)")
    lon, lat = parts[0], parts[1]
    h = parts[2] if len(parts) == 3 else 0.0
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or not -500 <= h <= 9000:
        raise GeorefError(f"--origin {text!r}: longitude, latitude or height out of range")
    return lon, lat, h


def local_projection(lon: float, lat: float, datum_of: CRS) -> CRS:
    """An azimuthal equidistant CRS centred on (lon, lat) on ``datum_of``'s geographic datum:
    the map CRS of a model placed by a point (site reference or --origin). Its axes are east
    and north at the point, its distances true there."""
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import AzimuthalEquidistantConversion

    geo = datum_of.geodetic_crs or CRS.from_epsg(4326)
    return ProjectedCRS(
        conversion=AzimuthalEquidistantConversion(
            latitude_natural_origin=lat, longitude_natural_origin=lon
        ),
        geodetic_crs=geo,
        name=f"local azimuthal equidistant at {lon:.7f} E, {lat:.7f} N",
    )


def crs_from_name(name: str) -> CRS:
    """IfcProjectedCRS.Name / ePSet_ProjectedCRS.Name ('EPSG:9897', 'EPSG 9897', '9897', WKT)."""
    text = name.strip()
    try:
        return CRS.from_user_input(text)
    except Exception:
        pass
    m = re.fullmatch(r"(?:EPSG\s*[:\s]\s*)?(\d{4,6})", text, re.I)
    if m:
        try:
            return CRS.from_epsg(int(m.group(1)))
        except Exception:
            pass
    raise GeorefError(f"the map CRS {name!r} is not one pyproj knows; pass --crs EPSG:CODE")


def horizontal(crs: CRS) -> CRS:
    """The 2D CRS vertices are transformed in: a compound CRS's horizontal part."""
    if crs.is_compound:
        return crs.sub_crs_list[0]
    return crs.to_2d() if len(crs.axis_info) > 2 else crs


def vertical_name(crs: CRS) -> str | None:
    """The vertical datum of a compound CRS, as its name (with EPSG code when known)."""
    if crs.is_compound and len(crs.sub_crs_list) > 1:
        v = crs.sub_crs_list[1]
        code = v.to_epsg()
        return f"{v.name} (EPSG:{code})" if code else v.name
    return None


def height_datum_of(vertical: str | None) -> str | None:
    """Which of :data:`HEIGHT_DATUMS` a vertical datum the file names is; None: not known."""
    if not vertical:
        return None
    v = vertical.lower()
    if "5737" in v or "1985" in v:
        return "1985"
    if "egm96" in v or "5773" in v:
        return "geoid"
    if "ellipsoid" in v or "wgs 84" in v or "4979" in v:
        return "ellipsoidal"
    return None


@dataclass
class Georeference:
    """How a model is placed: a map conversion into ``map_crs`` and the height rule."""

    path: str  # one of cimtwin.spatial.bim.GEOREF_PATHS
    map_crs: CRS
    map_crs_label: str
    conversion: MapConversion
    map_unit_m: float  # metres per map unit
    project_unit_m: float  # metres per project length unit
    height_datum: str  # one of HEIGHT_DATUMS
    height_rule: str  # how heights became 1985 heights, for the record
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """Every parameter used, for ``bim_model.georef`` and the import report."""
        c = self.conversion
        return {
            "path": self.path,
            "map_crs": self.map_crs_label,
            "eastings": c.eastings,
            "northings": c.northings,
            "orthogonal_height": c.height,
            "x_axis_abscissa": c.x_abscissa,
            "x_axis_ordinate": c.x_ordinate,
            "rotation_deg": c.rotation_deg,
            "scale": c.scale,
            "factors": [c.factor_x, c.factor_y, c.factor_z],
            "map_unit_m": self.map_unit_m,
            "project_unit_m": self.project_unit_m,
            "height_datum": self.height_datum,
            "height_rule": self.height_rule,
            "notes": self.notes,
            "warnings": self.warnings,
        }


class StoragePlacer:
    """Applies a :class:`Georeference`: local project coordinates -> storage CRS, 1985 heights."""

    def __init__(self, georef: Georeference, storage_srid: int) -> None:
        self.georef = georef
        self.storage_srid = storage_srid
        self.storage = CRS.from_epsg(storage_srid)
        self._horizontal = horizontal(georef.map_crs)
        # map coordinates are in MapUnit; pyproj wants the CRS's own axis unit
        self._to_native = georef.map_unit_m / self._horizontal.axis_info[0].unit_conversion_factor
        self._identity = self._horizontal == self.storage
        self._to_storage = Transformer.from_crs(self._horizontal, self.storage, always_xy=True)
        self._to_lonlat = Transformer.from_crs(
            self._horizontal, self._horizontal.geodetic_crs or CRS.from_epsg(4326), always_xy=True
        )

    def map_xyz(self, local: np.ndarray) -> np.ndarray:
        """Local (project units) -> map CRS native units (x, y) and metres (z)."""
        m = local_to_map(local, self.georef.conversion)
        m[:, :2] *= self._to_native
        m[:, 2] *= self.georef.map_unit_m
        return m

    def lonlat(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where local points land, as longitude/latitude on the map CRS's datum."""
        m = self.map_xyz(local)
        lon, lat = _transform(self._to_lonlat, m[:, 0], m[:, 1])
        return lon, lat

    def check_area(self, local: np.ndarray, where: str) -> None:
        """Refuse a model whose points fall outside the storage CRS's area of use."""
        aou = self.storage.area_of_use
        lon, lat = self.lonlat(local)
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            raise GeorefError(f"{where}: the georeference gives no position on the globe")
        if aou is None:
            return
        inside = (
            (lon >= aou.west - AREA_MARGIN_DEG)
            & (lon <= aou.east + AREA_MARGIN_DEG)
            & (lat >= aou.south - AREA_MARGIN_DEG)
            & (lat <= aou.north + AREA_MARGIN_DEG)
        )
        if not inside.all():
            clon, clat = float(np.mean(lon)), float(np.mean(lat))
            raise GeorefError(
                f"{where}: placed by {self.georef.path} ({self.georef.map_crs_label}) the model "
                f"would land at lon {clon:.6f}, lat {clat:.6f}, outside the storage CRS "
                f"EPSG:{self.storage_srid} ({aou.name}); pass --origin LON,LAT,H (and "
                "--rotation DEG) to place it"
            )

    def to_storage(self, local: np.ndarray) -> np.ndarray:
        """(n, 3) local project coordinates -> (n, 3) storage (easting, northing, H1985)."""
        m = self.map_xyz(local)
        if len(m) == 0:
            return m
        if self._identity:
            x, y = m[:, 0], m[:, 1]
        else:
            x, y = _transform(self._to_storage, m[:, 0], m[:, 1])
        h = self._heights(m)
        out = np.column_stack([x, y, h])
        if not np.all(np.isfinite(out)):
            raise GeorefError("the transformation to the storage CRS gave non-finite coordinates")
        return out

    def _heights(self, m: np.ndarray) -> np.ndarray:
        datum = self.georef.height_datum
        if datum == "1985":
            return m[:, 2]
        from cimtwin.tiles.threed.placement import Placement, geoid_undulation

        placement = Placement(srid=self.storage_srid)
        if datum == "geoid":
            return m[:, 2] - placement.offset
        lon, lat = _transform(self._to_lonlat, m[:, 0], m[:, 1])
        return m[:, 2] - placement.offset - geoid_undulation(lon, lat, placement.grid)


def _transform(tr: Transformer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size == 1:  # pyproj's one-point path would turn the arrays into floats
        a, b = tr.transform(float(x[0]), float(y[0]))
        return np.array([a]), np.array([b])
    a, b = tr.transform(x, y)
    return np.asarray(a, np.float64), np.asarray(b, np.float64)
