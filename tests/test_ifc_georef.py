"""IFC georeferencing without a database: the map-conversion maths, how Scale is read against
the units, and which path each sample file takes with which parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import CRS

from cimtwin.importers.ifc.georef import (
    Georeference,
    GeorefError,
    MapConversion,
    StoragePlacer,
    effective_scale,
    local_projection,
    local_to_map,
    parse_origin,
    rotation_axis,
    true_north_rotation,
)
from cimtwin.importers.ifc.locate import UserPlacement, find_georeference
from tests.shared_data import IFC, needs_ifc

SHENZHEN = CRS.from_epsg(4547)


def test_identity_conversion_keeps_points() -> None:
    p = np.array([[1.5, -2.0, 3.25], [0.0, 0.0, 0.0]])
    assert np.array_equal(local_to_map(p, MapConversion()), p)


def test_translation_rotation_and_scale_by_hand() -> None:
    # 90 degrees: local +X points north, local +Y west
    conv = MapConversion(1000.0, 2000.0, 50.0, 0.0, 1.0, 2.0)
    out = local_to_map(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), conv)
    assert out == pytest.approx(np.array([[1000.0, 2002.0, 50.0], [998.0, 2000.0, 52.0]]))


def test_rotation_direction_is_normalised() -> None:
    # a direction written with length 2 turns the model, it does not scale it
    a = local_to_map(
        np.array([[3.0, 4.0, 0.0]]), MapConversion(x_abscissa=2 * 0.6, x_ordinate=2 * 0.8)
    )
    assert math.hypot(a[0, 0], a[0, 1]) == pytest.approx(5.0)
    assert a[0, :2] == pytest.approx([3 * 0.6 - 4 * 0.8, 3 * 0.8 + 4 * 0.6])


def test_ifc43_factors_scale_each_axis() -> None:
    conv = MapConversion(scale=1.0, factor_x=2.0, factor_y=3.0, factor_z=4.0)
    assert local_to_map(np.array([[1.0, 1.0, 1.0]]), conv)[0] == pytest.approx([2.0, 3.0, 4.0])


def test_zero_direction_is_refused() -> None:
    with pytest.raises(GeorefError, match="XAxisAbscissa"):
        local_to_map(np.zeros((1, 3)), MapConversion(x_abscissa=0.0, x_ordinate=0.0))


@pytest.mark.parametrize(
    ("scale", "ratio", "expected"),
    [
        (None, 0.001, 0.001),  # millimetre model, metre map, Scale empty: the unit ratio
        (None, 1.0, 1.0),
        (1000.0, 1000.0, 1000.0),  # metre model, millimetre map, Scale = the unit change
        (0.9996, 0.001, 0.9996e-3),  # a grid scale factor on top of the unit change
        (0.9996, 1.0, 0.9996),
    ],
)
def test_effective_scale(scale: float | None, ratio: float, expected: float) -> None:
    assert effective_scale(scale, ratio)[0] == pytest.approx(expected)


def test_ambiguous_scale_is_refused() -> None:
    with pytest.raises(GeorefError, match="neither"):
        effective_scale(25.0, 0.001)


def test_true_north_rotation() -> None:
    assert true_north_rotation(None) == 0.0
    assert true_north_rotation((0.0, 1.0)) == pytest.approx(0.0)
    # north along local +X: the model is turned 90 degrees clockwise to put it north
    assert true_north_rotation((1.0, 0.0)) == pytest.approx(90.0)
    assert rotation_axis(90.0) == pytest.approx((0.0, 1.0))


def test_parse_origin() -> None:
    assert parse_origin("114.0239,22.608,5") == (114.0239, 22.608, 5.0)
    assert parse_origin("114.0239,22.608") == (114.0239, 22.608, 0.0)
    for bad in ("114", "a,b,c", "200,22,0", "114,22,99999"):
        with pytest.raises(GeorefError, match="--origin"):
            parse_origin(bad)


def test_origin_placement_lands_on_the_point_and_turns() -> None:
    """The local origin goes to the given lon/lat in the storage CRS; +X turned by --rotation."""
    from pyproj import Transformer

    crs = local_projection(114.0239, 22.6080, SHENZHEN)
    a, o = rotation_axis(30.0)
    g = Georeference("origin", crs, crs.name, MapConversion(0, 0, 5.0, a, o, 1.0), 1, 1, "1985", "")
    placer = StoragePlacer(g, 4547)
    out = placer.to_storage(np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 2.0]]))
    x0, y0 = Transformer.from_crs(4490, 4547, always_xy=True).transform(114.0239, 22.6080)
    assert out[0] == pytest.approx([x0, y0, 5.0], abs=1e-6)
    d = out[1] - out[0]
    assert math.hypot(d[0], d[1]) == pytest.approx(10.0, abs=1e-4)
    # 30 degrees plus the grid convergence of CM 114E at 114.0239 E (about 0.009 degrees)
    assert math.degrees(math.atan2(d[1], d[0])) == pytest.approx(30.0, abs=0.02)
    assert d[2] == pytest.approx(2.0)


def _georef(name: str, **user) -> Georeference:
    import ifcopenshell

    return find_georeference(ifcopenshell.open(str(IFC / name)), UserPlacement(**user), SHENZHEN)


@needs_ifc
def test_duplex_georeferenced_uses_the_property_sets() -> None:
    g = _georef("Duplex_A_20110907_georeferenced.ifc")
    assert g.path == "ePSet_MapConversion" and g.map_crs_label == "EPSG:9897"
    c = g.conversion
    assert (c.eastings, c.northings) == (76670.0, 77179.0)
    assert c.height == pytest.approx(293.700012207031)
    assert (c.x_abscissa, c.x_ordinate) == (0.325568154457152, 0.945518575599318)
    assert c.scale == 1.0 and g.map_unit_m == 1.0 and g.project_unit_m == 1.0
    assert c.rotation_deg == pytest.approx(71.0, abs=1e-6)
    # NG95 cannot be converted to 1985 heights: said, not hidden
    assert g.warnings and "NG95" in g.warnings[0]


@needs_ifc
def test_duplex_uses_the_site_reference() -> None:
    g = _georef("Duplex_A_20110907.ifc")
    assert g.path == "IfcSite"
    assert "41.8744000" in g.notes[0] and "-87.6394000" in g.notes[0]
    with pytest.raises(GeorefError, match=r"lon -87\.6394.*lat 41\.8744.*--origin"):
        StoragePlacer(g, 4547).check_area(np.zeros((1, 3)), "Duplex_A_20110907.ifc")


@needs_ifc
def test_unit1_scale_is_the_unit_conversion() -> None:
    g = _georef("ifcopenshell_geolocation-unit1.ifc")
    assert g.path == "IfcMapConversion" and g.map_crs_label == "EPSG:3857"
    assert g.map_unit_m == 0.001 and g.project_unit_m == 1.0
    assert g.conversion.scale == 1000.0  # not 1000 x 1000
    placer = StoragePlacer(g, 3857)
    # hand: E = (10000 mm + 1000 x 20 m) = 30 m, N = 1000 x 1 mm = 1 m
    assert placer.to_storage(np.array([[20.0, 1.0, 1.0]]))[0] == pytest.approx([30.0, 1.0, 1.0])


@needs_ifc
def test_angle_file_needs_a_crs_and_then_rotates() -> None:
    with pytest.raises(GeorefError, match="empty CRS name.*--crs"):
        _georef("ifcopenshell_geolocation-mapconversion-angle.ifc")
    g = _georef("ifcopenshell_geolocation-mapconversion-angle.ifc", crs="EPSG:3857")
    assert g.path == "IfcMapConversion" and g.project_unit_m == 0.001
    assert g.conversion.scale == pytest.approx(0.001)  # Scale empty: mm -> m
    assert g.conversion.rotation_deg == pytest.approx(-30.0)
    # hand: local (2000 mm, 1000 mm) = (2 m, 1 m):
    # E = 15000 + 2 cos(-30) - 1 sin(-30), N = 2 sin(-30) + 1 cos(-30)
    out = StoragePlacer(g, 3857).to_storage(np.array([[2000.0, 1000.0, 500.0]]))[0]
    c, s = math.cos(math.radians(-30)), math.sin(math.radians(-30))
    assert out == pytest.approx([15000 + 2 * c - 1 * s, 2 * s + 1 * c, 0.5])


@needs_ifc
def test_basic_has_no_georeference() -> None:
    with pytest.raises(GeorefError, match="no georeference.*--origin"):
        _georef("ifcopenshell_basic.ifc")
    g = _georef("ifcopenshell_basic.ifc", origin=(114.0239, 22.608, 3.0), rotation_deg=15.0)
    assert g.path == "origin" and g.conversion.rotation_deg == pytest.approx(15.0)


@needs_ifc
def test_origin_overrides_the_files_georeference() -> None:
    g = _georef("Duplex_A_20110907_georeferenced.ifc", origin=(114.0239, 22.608, 3.0))
    assert g.path == "origin" and g.conversion.rotation_deg == 0.0


@needs_ifc
def test_height_datum_option() -> None:
    g = _georef("Duplex_A_20110907_georeferenced.ifc", height_datum="geoid")
    assert g.height_datum == "geoid" and not g.warnings
    with pytest.raises(GeorefError, match="--height-datum"):
        _georef("Duplex_A_20110907_georeferenced.ifc", height_datum="msl")


def test_ifc43_map_conversion_scaled_is_read() -> None:
    """IFC4.3's IfcMapConversionScaled: its per-axis factors multiply the unit scale."""
    import ifcopenshell

    f = ifcopenshell.file(schema="IFC4X3_ADD2")
    mm = f.createIfcSIUnit(None, "LENGTHUNIT", "MILLI", "METRE")
    f.createIfcProject(
        ifcopenshell.guid.new(), None, "p", UnitsInContext=f.createIfcUnitAssignment([mm])
    )
    origin = f.createIfcAxis2Placement3D(f.createIfcCartesianPoint((0.0, 0.0, 0.0)))
    ctx = f.createIfcGeometricRepresentationContext(None, "Model", 3, 1e-5, origin, None)
    crs = f.createIfcProjectedCRS("EPSG:4547")
    f.createIfcMapConversionScaled(
        ctx, crs, 502000.0, 2501000.0, 10.0, 0.0, 1.0, None, 0.9996, 0.9997, 1.0
    )
    g = find_georeference(f, UserPlacement(), SHENZHEN)
    assert g.path == "IfcMapConversionScaled" and g.map_crs_label == "EPSG:4547"
    c = g.conversion
    assert c.scale == pytest.approx(0.001)  # Scale empty: millimetres to metres
    assert (c.factor_x, c.factor_y, c.factor_z) == (0.9996, 0.9997, 1.0)
    # by hand: 90 degrees, so local +X (1000 mm) goes north scaled by FactorX
    out = StoragePlacer(g, 4547).to_storage(np.array([[1000.0, 2000.0, 3000.0]]))[0]
    assert out == pytest.approx([502000.0 - 2 * 0.9997, 2501000.0 + 1 * 0.9996, 13.0])


def test_ellipsoidal_heights_invert_the_3d_tiles_placement() -> None:
    """--height-datum ellipsoidal: H1985 = h - N - offset, so the 3D Tiles placement of the
    stored height gives the file's ellipsoidal height back."""
    from cimtwin.tiles.threed.placement import Placement

    crs = local_projection(114.0239, 22.6080, SHENZHEN)
    conv = MapConversion(0.0, 0.0, 100.0)
    g = Georeference("origin", crs, crs.name, conv, 1.0, 1.0, "ellipsoidal", "")
    (x, y, h1985) = StoragePlacer(g, 4547).to_storage(np.array([[0.0, 0.0, 0.0]]))[0]
    placement = Placement(srid=4547)
    if placement.grid is not None:  # EGM96 at Shenzhen North: N is about -3 m
        assert h1985 == pytest.approx(100.0 - placement.offset + 3.2, abs=0.5)
    back = placement.ellipsoidal(np.array([x, x]), np.array([y, y]), np.array([h1985, h1985]))
    assert back == pytest.approx([100.0, 100.0], abs=1e-6)
