"""Finding a model's georeference in an IFC file, by the paths and in the order
:mod:`cimtwin.importers.ifc.georef` describes (``--origin``, IfcMapConversion[Scaled],
ePSet_MapConversion, IfcSite reference), with the units and the height rule it applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyproj import CRS

from cimtwin.importers.ifc.georef import (
    HEIGHT_DATUMS,
    Georeference,
    GeorefError,
    MapConversion,
    crs_from_name,
    effective_scale,
    height_datum_of,
    horizontal,
    local_projection,
    rotation_axis,
    true_north_rotation,
    vertical_name,
)


@dataclass(frozen=True)
class UserPlacement:
    """What the command line says about placement (``--origin``, ``--rotation``, ``--crs``,
    ``--height-datum``)."""

    origin: tuple[float, float, float] | None = None
    rotation_deg: float = 0.0
    crs: str | None = None
    height_datum: str | None = None


def unit_metres(unit: Any) -> float:
    """Metres per unit of an IfcNamedUnit (SI with prefix, or conversion based, e.g. foot)."""
    import ifcopenshell.util.unit as uu

    if unit.is_a("IfcSIUnit"):
        return float(uu.get_prefix_multiplier(unit.Prefix)) if unit.Prefix else 1.0
    if unit.is_a("IfcConversionBasedUnit"):
        factor = unit.ConversionFactor
        return float(factor.ValueComponent.wrappedValue) * unit_metres(factor.UnitComponent)
    raise GeorefError(f"map unit {unit} is not a length unit IfcOpenShell can read")


def unit_from_label(label: str | None) -> float | None:
    """ePSet_ProjectedCRS.MapUnit is text in the wild: 'METRE', 'MILLIMETRE', 'mm', 'FOOT'."""
    if not label:
        return None
    v = label.strip().upper().replace(" ", "").replace(".", "")
    table = {
        "MILLIMETRE": 0.001,
        "MILLIMETER": 0.001,
        "MM": 0.001,
        "CENTIMETRE": 0.01,
        "CENTIMETER": 0.01,
        "CM": 0.01,
        "METRE": 1.0,
        "METER": 1.0,
        "M": 1.0,
        "KILOMETRE": 1000.0,
        "KILOMETER": 1000.0,
        "FOOT": 0.3048,
        "FEET": 0.3048,
        "FT": 0.3048,
        "USSURVEYFOOT": 1200 / 3937,
    }
    if v in table:
        return table[v]
    raise GeorefError(f"ePSet_ProjectedCRS MapUnit {label!r} is not a length unit")


def _true_north(model: Any) -> tuple[float, float] | None:
    """TrueNorth of the 3D model context, else of any context (sub-contexts last: theirs is
    their parent's in IFC4, but IFC2x3 exporters write it there)."""
    contexts = list(model.by_type("IfcGeometricRepresentationContext"))
    contexts.sort(
        key=lambda c: (
            c.is_a("IfcGeometricRepresentationSubContext"),
            c.ContextType != "Model",
            c.id(),
        )
    )
    for c in contexts:
        tn = getattr(c, "TrueNorth", None)
        if tn is not None:
            r = tn.DirectionRatios
            return float(r[0]), float(r[1])
    return None


def _by_type(model: Any, name: str) -> list:
    try:
        return list(model.by_type(name, include_subtypes=False))
    except RuntimeError:  # the class is not in this file's schema
        return []


def _height_rule(user: UserPlacement, vertical: str | None, warnings: list[str]) -> tuple[str, str]:
    if user.height_datum:
        if user.height_datum not in HEIGHT_DATUMS:
            raise GeorefError(
                f"--height-datum {user.height_datum!r}: one of {', '.join(HEIGHT_DATUMS)}"
            )
        return user.height_datum, f"--height-datum {user.height_datum}"
    known = height_datum_of(vertical)
    if known:
        return known, f"the file's vertical datum {vertical!r}"
    if vertical:
        warnings.append(
            f"heights are in {vertical!r}, which cimtwin cannot convert: taken unchanged as "
            "1985 heights (pass --height-datum 1985|geoid|ellipsoidal to say otherwise)"
        )
        return "1985", f"{vertical!r} taken unchanged as 1985 heights"
    return "1985", "no vertical datum in the file: heights taken as 1985 heights"


def _projected(
    name: str | None,
    map_unit_m: float | None,
    user: UserPlacement,
    source: str,
) -> tuple[CRS, str, float]:
    """The map CRS named by the file (or --crs), its label and metres per map unit."""
    if user.crs:
        crs = crs_from_name(user.crs)
        label = f"{_label(crs)} (--crs)"
    elif not name or not name.strip():
        raise GeorefError(
            f"{source} has an empty CRS name: the map coordinates cannot be placed; pass "
            "--crs EPSG:CODE (the CRS the conversion is in) or --origin LON,LAT,H"
        )
    else:
        crs = crs_from_name(name)
        label = _label(crs)
    h = horizontal(crs)
    if not h.is_projected:
        raise GeorefError(f"the map CRS {label} is not projected (eastings/northings)")
    unit = map_unit_m if map_unit_m else h.axis_info[0].unit_conversion_factor
    return crs, label, float(unit)


def _num(values: dict[str, Any], key: str, default: float) -> float:
    v = values.get(key)
    return default if v is None else float(v)


def _label(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.name


def find_georeference(model: Any, user: UserPlacement, storage: CRS) -> Georeference:
    """The georeference of an opened ifcopenshell file, by the first path that applies."""
    import ifcopenshell.util.element as ue
    import ifcopenshell.util.unit as uu

    project_unit = float(uu.calculate_unit_scale(model))
    warnings: list[str] = []
    if user.origin is not None:
        lon, lat, h = user.origin
        crs = local_projection(lon, lat, storage)
        a, o = rotation_axis(user.rotation_deg)
        datum, rule = _height_rule(
            UserPlacement(height_datum=user.height_datum or "1985"), None, warnings
        )
        return Georeference(
            path="origin",
            map_crs=crs,
            map_crs_label=crs.name,
            conversion=MapConversion(0.0, 0.0, h, a, o, project_unit),
            map_unit_m=1.0,
            project_unit_m=project_unit,
            height_datum=datum,
            height_rule=rule,
            notes=[
                f"--origin {lon:g},{lat:g},{h:g} --rotation {user.rotation_deg:g}: local origin "
                "at that point, +X axis turned counter-clockwise from east"
            ],
            warnings=warnings,
        )
    conversions = _by_type(model, "IfcMapConversionScaled") + _by_type(model, "IfcMapConversion")
    if conversions:
        # the 3D model context's conversion, when there are several
        conversions.sort(key=lambda c: getattr(c.SourceCRS, "ContextType", None) != "Model")
        mc = conversions[0]
        target = mc.TargetCRS
        kind = mc.is_a()
        map_unit = unit_metres(target.MapUnit) if getattr(target, "MapUnit", None) else None
        crs, label, map_unit_m = _projected(target.Name, map_unit, user, f"{kind}'s TargetCRS")
        scale, note = effective_scale(mc.Scale, project_unit / map_unit_m)
        factors = (1.0, 1.0, 1.0)
        if kind == "IfcMapConversionScaled":
            factors = (float(mc.FactorX), float(mc.FactorY), float(mc.FactorZ))
        vertical = getattr(target, "VerticalDatum", None) or vertical_name(crs)
        datum, rule = _height_rule(user, vertical, warnings)
        return Georeference(
            path=kind,
            map_crs=crs,
            map_crs_label=label,
            conversion=MapConversion(
                float(mc.Eastings),
                float(mc.Northings),
                float(mc.OrthogonalHeight),
                float(mc.XAxisAbscissa) if mc.XAxisAbscissa is not None else 1.0,
                float(mc.XAxisOrdinate) if mc.XAxisOrdinate is not None else 0.0,
                scale,
                *factors,
            ),
            map_unit_m=map_unit_m,
            project_unit_m=project_unit,
            height_datum=datum,
            height_rule=rule,
            notes=[note],
            warnings=warnings,
        )
    for holder in [*model.by_type("IfcProject"), *model.by_type("IfcSite")]:
        psets = ue.get_psets(holder)
        conv, pcrs = psets.get("ePSet_MapConversion"), psets.get("ePSet_ProjectedCRS")
        if not conv:
            continue
        pcrs = pcrs or {}
        map_unit = unit_from_label(pcrs.get("MapUnit"))
        crs, label, map_unit_m = _projected(
            pcrs.get("Name"), map_unit, user, f"ePSet_ProjectedCRS on {holder.is_a()}"
        )
        scale, note = effective_scale(conv.get("Scale"), project_unit / map_unit_m)
        vertical = pcrs.get("VerticalDatum") or vertical_name(crs)
        datum, rule = _height_rule(user, vertical, warnings)
        return Georeference(
            path="ePSet_MapConversion",
            map_crs=crs,
            map_crs_label=label,
            conversion=MapConversion(
                _num(conv, "Eastings", 0.0),
                _num(conv, "Northings", 0.0),
                _num(conv, "OrthogonalHeight", 0.0),
                _num(conv, "XAxisAbscissa", 1.0),
                _num(conv, "XAxisOrdinate", 0.0),
                scale,
            ),
            map_unit_m=map_unit_m,
            project_unit_m=project_unit,
            height_datum=datum,
            height_rule=rule,
            notes=[f"property sets on {holder.is_a()} #{holder.id()}", note],
            warnings=warnings,
        )
    for site in model.by_type("IfcSite"):
        if site.RefLatitude and site.RefLongitude:
            import ifcopenshell.util.geolocation as ug

            lat = ug.dms2dd(*site.RefLatitude)
            lon = ug.dms2dd(*site.RefLongitude)
            elevation = float(site.RefElevation or 0.0) * project_unit
            rotation = true_north_rotation(_true_north(model))
            a, o = rotation_axis(rotation)
            crs = local_projection(lon, lat, storage)
            datum, rule = _height_rule(user, None, warnings)
            return Georeference(
                path="IfcSite",
                map_crs=crs,
                map_crs_label=crs.name,
                conversion=MapConversion(0.0, 0.0, elevation, a, o, project_unit),
                map_unit_m=1.0,
                project_unit_m=project_unit,
                height_datum=datum,
                height_rule=rule,
                notes=[
                    f"IfcSite #{site.id()} RefLatitude {lat:.7f}, RefLongitude {lon:.7f}, "
                    f"RefElevation {elevation:g} m at the local origin; TrueNorth gives a "
                    f"rotation of {rotation:g} deg"
                ],
                warnings=warnings,
            )
    raise GeorefError(
        "no georeference (no IfcMapConversion, no ePSet_MapConversion, no IfcSite "
        "RefLatitude/RefLongitude): pass --origin LON,LAT,H (and --rotation DEG) to place it"
    )
