"""The sample's one BIM model: an IFC4 file for one mid-size building of the layout, in the
same place as its footprint, so the twin shows a model (and its rooms) next to LOD1 boxes.

The model is drawn in local metres with its x axis along the footprint's long side and its
origin at a footprint corner; IfcMapConversion + IfcProjectedCRS EPSG:4547 put that origin at
the corner's easting/northing and the building's base elevation (1985 heights, stated as the
CRS's vertical datum). Every storey gets a slab, exterior walls on the footprint's edge, a
corridor with rooms on both sides (IfcSpace with areas), doors and windows as boxes in the
walls and a stair in a stair room. GUIDs come from names (uuid5) and the header's time stamp
is pinned, so the same building always gives the same bytes.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from cimtwin.samples.spec import FIXED_ISO_DATE, STORAGE_EPSG

#: uuid5 namespace of the sample model's GUIDs
GUID_NAMESPACE = uuid.UUID("6f1d0d8e-3c55-5b1e-9a43-6b0c2f7e1a01")
#: uses whose buildings may get the model, and the name of their ordinary rooms
ROOM_WORD = {"commercial": "商铺", "office": "办公室", "government": "办公室"}
WALL_T = 0.3  # exterior wall thickness (m)
PART_T = 0.15  # interior wall thickness (m)
SLAB_T = 0.2
CORRIDOR = 2.4
COLOURS = {  # style name -> (r, g, b, transparency)
    "wall": (0.86, 0.84, 0.80, 0.0),
    "partition": (0.93, 0.93, 0.90, 0.0),
    "slab": (0.62, 0.62, 0.64, 0.0),
    "window": (0.35, 0.55, 0.80, 0.4),
    "door": (0.55, 0.36, 0.20, 0.0),
    "stair": (0.45, 0.45, 0.48, 0.0),
    "space": (0.60, 0.85, 0.60, 0.7),
}


@dataclass(frozen=True)
class Choice:
    """The building the model is for, and its frame: origin (E, N) and the x axis."""

    code: str
    name: str
    use: str
    floors: int
    storey_h: float
    base_elev: float
    origin: tuple[float, float]
    axis: tuple[float, float]  # unit vector of the local x axis in (E, N)
    length: float  # along x
    width: float  # along y


def choose_building(building: gpd.GeoDataFrame, centre: tuple[float, float]) -> Choice | None:
    """The building with 4 to 8 storeys and a room-friendly use nearest ``centre`` (the
    station), with a footprint that is a rectangle 14 to 80 m a side; None when there is none.
    The footprint's long side becomes the model's x axis."""
    best: tuple[float, str, Any] | None = None
    for row in building.itertuples(index=False):
        if row.use not in ROOM_WORD or not 4 <= int(row.floors) <= 8:
            continue
        geom = row.geometry
        poly = geom.geoms[0] if geom.geom_type == "MultiPolygon" else geom
        minx, miny, maxx, maxy = poly.bounds
        w, h = maxx - minx, maxy - miny
        if abs(poly.area - w * h) > 1e-3 * w * h or not (min(w, h) >= 14 and max(w, h) <= 80):
            continue
        d = math.hypot((minx + maxx) / 2 - centre[0], (miny + maxy) / 2 - centre[1])
        if best is None or (d, row.bldg_cd) < best[:2]:
            best = (d, row.bldg_cd, row)
    if best is None:
        return None
    row = best[2]
    geom = row.geometry
    minx, miny, maxx, maxy = (geom.geoms[0] if geom.geom_type == "MultiPolygon" else geom).bounds
    w, h = maxx - minx, maxy - miny
    if w >= h:  # x east, y north: origin at the south-west corner
        origin, axis, length, width = (minx, miny), (1.0, 0.0), w, h
    else:  # x north, y west: origin at the south-east corner
        origin, axis, length, width = (maxx, miny), (0.0, 1.0), h, w
    floors = int(row.floors)
    return Choice(
        code=str(row.bldg_cd),
        name=str(row.name),
        use=str(row.use),
        floors=floors,
        storey_h=round(float(row.height_m) / floors, 3),
        base_elev=float(row.base_elev),
        origin=(round(origin[0], 3), round(origin[1], 3)),
        axis=axis,
        length=round(length, 3),
        width=round(width, 3),
    )


class _Writer:
    """Small helpers over one ifcopenshell file: named GUIDs, boxes, styles, psets."""

    def __init__(self, code: str) -> None:
        import ifcopenshell

        self.f = ifcopenshell.file(schema="IFC4")
        self.code = code
        self.profiles: dict[tuple[float, float], Any] = {}
        self.styles: dict[str, Any] = {}
        self.body: Any = None
        self.owner: Any = None

    def guid(self, name: str) -> str:
        import ifcopenshell.guid

        return str(
            ifcopenshell.guid.compress(uuid.uuid5(GUID_NAMESPACE, f"{self.code}/{name}").hex)
        )

    def point(self, *xyz: float) -> Any:
        return self.f.create_entity("IfcCartesianPoint", Coordinates=[float(v) for v in xyz])

    def direction(self, *xyz: float) -> Any:
        return self.f.create_entity("IfcDirection", DirectionRatios=[float(v) for v in xyz])

    def placement(self, x: float, y: float, z: float, relative: Any = None) -> Any:
        axis = self.f.create_entity("IfcAxis2Placement3D", Location=self.point(x, y, z))
        return self.f.create_entity(
            "IfcLocalPlacement", PlacementRelTo=relative, RelativePlacement=axis
        )

    def style(self, name: str) -> Any:
        if name not in self.styles:
            r, g, b, t = COLOURS[name]
            colour = self.f.create_entity("IfcColourRgb", Red=r, Green=g, Blue=b)
            shading = self.f.create_entity(
                "IfcSurfaceStyleRendering",
                SurfaceColour=colour,
                Transparency=t,
                ReflectanceMethod="NOTDEFINED",
            )
            self.styles[name] = self.f.create_entity(
                "IfcSurfaceStyle", Name=name, Side="BOTH", Styles=[shading]
            )
        return self.styles[name]

    def solid(self, x: float, y: float, z: float, dx: float, dy: float, dz: float) -> Any:
        """An extruded rectangle from corner (x, y, z) of size dx, dy, dz (element frame)."""
        key = (round(dx, 4), round(dy, 4))
        if key not in self.profiles:
            self.profiles[key] = self.f.create_entity(
                "IfcRectangleProfileDef",
                ProfileType="AREA",
                Position=self.f.create_entity(
                    "IfcAxis2Placement2D", Location=self.point(dx / 2, dy / 2)
                ),
                XDim=float(dx),
                YDim=float(dy),
            )
        return self.f.create_entity(
            "IfcExtrudedAreaSolid",
            SweptArea=self.profiles[key],
            Position=self.f.create_entity("IfcAxis2Placement3D", Location=self.point(x, y, z)),
            ExtrudedDirection=self.direction(0, 0, 1),
            Depth=float(dz),
        )

    def shape(self, solids: list[Any], style: str) -> Any:
        s = self.style(style)
        for item in solids:
            self.f.create_entity("IfcStyledItem", Item=item, Styles=[s])
        rep = self.f.create_entity(
            "IfcShapeRepresentation",
            ContextOfItems=self.body,
            RepresentationIdentifier="Body",
            RepresentationType="SweptSolid",
            Items=solids,
        )
        return self.f.create_entity("IfcProductDefinitionShape", Representations=[rep])

    def pset(self, target: Any, name: str, values: dict[str, Any]) -> None:
        props = []
        for key, value in values.items():
            kind = "IfcBoolean" if isinstance(value, bool) else "IfcLabel"
            props.append(
                self.f.create_entity(
                    "IfcPropertySingleValue",
                    Name=key,
                    NominalValue=self.f.create_entity(kind, value),
                )
            )
        ps = self.f.create_entity(
            "IfcPropertySet", GlobalId=self.guid(f"{target.GlobalId}/{name}"), Name=name,
            HasProperties=props,
        )  # fmt: skip
        self.f.create_entity(
            "IfcRelDefinesByProperties",
            GlobalId=self.guid(f"{target.GlobalId}/{name}/rel"),
            RelatedObjects=[target],
            RelatingPropertyDefinition=ps,
        )

    def quantities(self, target: Any, area: float, volume: float) -> None:
        q = self.f.create_entity(
            "IfcElementQuantity",
            GlobalId=self.guid(f"{target.GlobalId}/qto"),
            Name="Qto_SpaceBaseQuantities",
            Quantities=[
                self.f.create_entity("IfcQuantityArea", Name="NetFloorArea", AreaValue=area),
                self.f.create_entity("IfcQuantityVolume", Name="NetVolume", VolumeValue=volume),
            ],
        )
        self.f.create_entity(
            "IfcRelDefinesByProperties",
            GlobalId=self.guid(f"{target.GlobalId}/qto/rel"),
            RelatedObjects=[target],
            RelatingPropertyDefinition=q,
        )


def _rooms(length: float, n: int) -> list[tuple[float, float]]:
    """``n`` equal bays along a wall of ``length`` between the end walls: (x0, x1)."""
    inner = length - 2 * WALL_T
    step = inner / n
    return [(WALL_T + k * step, WALL_T + (k + 1) * step) for k in range(n)]


def write_model(path: Path, c: Choice) -> dict[str, int]:
    """Write the IFC4 model of ``c`` to ``path``; returns counts per IFC class."""
    w = _Writer(c.code)
    f = w.f
    f.header.file_name.name = path.name
    f.header.file_name.time_stamp = FIXED_ISO_DATE
    f.header.file_name.author = ["cimtwin samples generate"]
    f.header.file_name.organization = ["cimtwin (synthetic sample)"]
    # not IfcOpenShell's version: another release must not change the sample's bytes
    f.header.file_name.preprocessor_version = "cimtwin samples"
    f.header.file_name.originating_system = "cimtwin samples generate"
    f.header.file_name.authorization = "none"
    units = f.create_entity(
        "IfcUnitAssignment",
        Units=[
            f.create_entity("IfcSIUnit", UnitType=t, Name=n)
            for t, n in (
                ("LENGTHUNIT", "METRE"),
                ("AREAUNIT", "SQUARE_METRE"),
                ("VOLUMEUNIT", "CUBIC_METRE"),
            )
        ],
    )
    context = f.create_entity(
        "IfcGeometricRepresentationContext",
        ContextType="Model",
        CoordinateSpaceDimension=3,
        Precision=1e-5,
        WorldCoordinateSystem=f.create_entity("IfcAxis2Placement3D", Location=w.point(0, 0, 0)),
    )
    w.body = f.create_entity(
        "IfcGeometricRepresentationSubContext",
        ContextIdentifier="Body",
        ContextType="Model",
        ParentContext=context,
        TargetView="MODEL_VIEW",
    )
    project = f.create_entity(
        "IfcProject", GlobalId=w.guid("project"), Name=f"{c.name} BIM",
        LongName=f"{c.name} ({c.code}), synthetic sample model", UnitsInContext=units,
        RepresentationContexts=[context],
    )  # fmt: skip
    crs = f.create_entity(
        "IfcProjectedCRS",
        Name=f"EPSG:{STORAGE_EPSG}",
        Description="CGCS2000 / 3-degree Gauss-Kruger CM 114E",
        GeodeticDatum="CGCS2000",
        VerticalDatum="1985 National Height Benchmark (EPSG:5737)",
    )
    f.create_entity(
        "IfcMapConversion", SourceCRS=context, TargetCRS=crs, Eastings=c.origin[0],
        Northings=c.origin[1], OrthogonalHeight=c.base_elev, XAxisAbscissa=c.axis[0],
        XAxisOrdinate=c.axis[1], Scale=1.0,
    )  # fmt: skip
    site = f.create_entity(
        "IfcSite", GlobalId=w.guid("site"), Name=f"{c.code} site",
        ObjectPlacement=w.placement(0, 0, 0), CompositionType="ELEMENT",
    )  # fmt: skip
    building = f.create_entity(
        "IfcBuilding", GlobalId=w.guid("building"), Name=c.name, Description=c.code,
        ObjectPlacement=w.placement(0, 0, 0, site.ObjectPlacement), CompositionType="ELEMENT",
    )  # fmt: skip
    f.create_entity(
        "IfcRelAggregates", GlobalId=w.guid("project/site"), RelatingObject=project,
        RelatedObjects=[site],
    )  # fmt: skip
    f.create_entity(
        "IfcRelAggregates", GlobalId=w.guid("site/building"), RelatingObject=site,
        RelatedObjects=[building],
    )  # fmt: skip
    counts: dict[str, int] = {}
    storeys = []
    for level in range(1, c.floors + 1):
        storeys.append(_storey(w, c, level, building.ObjectPlacement, counts))
    f.create_entity(
        "IfcRelAggregates", GlobalId=w.guid("building/storeys"), RelatingObject=building,
        RelatedObjects=storeys,
    )  # fmt: skip
    counts["IfcBuildingStorey"] = len(storeys)
    path.parent.mkdir(parents=True, exist_ok=True)
    f.write(str(path))
    return dict(sorted(counts.items()))


def _storey(w: _Writer, c: Choice, level: int, parent: Any, counts: dict[str, int]) -> Any:
    """One storey: slab, walls, rooms, doors, windows and the stair."""
    f, L, W, h = w.f, c.length, c.width, c.storey_h
    z = round((level - 1) * h, 3)
    label = f"{level}F"
    storey = f.create_entity(
        "IfcBuildingStorey", GlobalId=w.guid(f"{label}"), Name=label, LongName=f"{level}层",
        ObjectPlacement=w.placement(0, 0, z, parent), CompositionType="ELEMENT", Elevation=z,
    )  # fmt: skip
    here = storey.ObjectPlacement
    # compass words for the model's sides: y = 0 faces away from the local y axis
    south, north = _compass((c.axis[1], -c.axis[0])), _compass((-c.axis[1], c.axis[0]))
    west, east = _compass((-c.axis[0], -c.axis[1])), _compass(c.axis)
    elements: list[Any] = []
    spaces: list[Any] = []
    clear = h - SLAB_T  # floor to ceiling

    def add(cls: str, name: str, solids: list[Any], style: str, **attrs: Any) -> Any:
        e = f.create_entity(
            cls, GlobalId=w.guid(f"{label}/{name}"), Name=name, ObjectPlacement=here,
            Representation=w.shape(solids, style), **attrs,
        )  # fmt: skip
        counts[cls] = counts.get(cls, 0) + 1
        (spaces if cls == "IfcSpace" else elements).append(e)
        return e

    def wall(name: str, box: tuple, external: bool) -> None:
        x0, y0, dx, dy = box
        style = "wall" if external else "partition"
        e = add(
            "IfcWall", name, [w.solid(x0, y0, 0, dx, dy, clear)], style, PredefinedType="SOLIDWALL"
        )
        w.pset(e, "Pset_WallCommon", {
            "IsExternal": external, "LoadBearing": external,
            "FireRating": "REI 120" if external else "EI 60",
        })  # fmt: skip

    add("IfcSlab", f"{label} 楼板", [w.solid(0, 0, clear, L, W, SLAB_T)], "slab",
        PredefinedType="FLOOR" if level < c.floors else "ROOF")  # fmt: skip
    wall(f"{label} 外墙 {south}", (0, 0, L, WALL_T), True)
    wall(f"{label} 外墙 {north}", (0, W - WALL_T, L, WALL_T), True)
    wall(f"{label} 外墙 {west}", (0, WALL_T, WALL_T, W - 2 * WALL_T), True)
    wall(f"{label} 外墙 {east}", (L - WALL_T, WALL_T, WALL_T, W - 2 * WALL_T), True)
    ya, yb = W / 2 - CORRIDOR / 2, W / 2 + CORRIDOR / 2  # the corridor's two walls
    wall(f"{label} 走廊墙 {south}", (WALL_T, ya - PART_T, L - 2 * WALL_T, PART_T), False)
    wall(f"{label} 走廊墙 {north}", (WALL_T, yb, L - 2 * WALL_T, PART_T), False)
    bays = _rooms(L, max(2, round(L / 12)))
    number = 0

    def room(x0: float, x1: float, y0: float, y1: float, word: str, kind: str) -> None:
        nonlocal number
        number += 1
        name = f"{level}{number:02d} {word}"
        dx, dy = x1 - x0, y1 - y0
        s = add(
            "IfcSpace", name, [w.solid(x0, y0, 0, dx, dy, clear)], "space",
            LongName=f"{level}层{word}", ObjectType=kind, PredefinedType="INTERNAL",
        )  # fmt: skip
        w.quantities(s, round(dx * dy, 3), round(dx * dy * clear, 3))

    word = ROOM_WORD[c.use]
    sides = ((south, WALL_T, ya - PART_T), (north, yb + PART_T, W - WALL_T))
    for side, y0, y1 in sides:
        for k, (x0, x1) in enumerate(bays):
            last = k == len(bays) - 1
            a = x0 + (PART_T / 2 if k else 0)
            b = x1 - (0 if last else PART_T / 2)
            if not last:
                wall(f"{label} 隔墙 {side}{k + 1}", (x1 - PART_T / 2, y0, PART_T, y1 - y0), False)
            if side == north and last:
                room(a, b, y0, y1, "楼梯间", "stair")
                _stair(w, add, a, b, y0, y1, h)
            elif level == 1 and side == south and k == 0:
                room(a, b, y0, y1, "大厅", "lobby")
            else:
                room(a, b, y0, y1, word, "retail" if c.use == "commercial" else "office")
            # a door from the corridor and a window in the facade, both centred on the room
            dy0 = ya - PART_T - 0.03 if side == south else yb - 0.03
            add("IfcDoor", f"{label} 门 {side}{k + 1}",
                [w.solid((a + b) / 2 - 0.5, dy0, 0, 1.0, PART_T + 0.06, 2.1)], "door",
                OverallHeight=2.1, OverallWidth=1.0)  # fmt: skip
            wy0 = -0.03 if side == south else W - WALL_T - 0.03
            for j, cx in enumerate(_window_centres(a, b)):
                add("IfcWindow", f"{label} 窗 {side}{k + 1}-{j + 1}",
                    [w.solid(cx - 0.9, wy0, 0.9, 1.8, WALL_T + 0.06, 1.5)], "window",
                    OverallHeight=1.5, OverallWidth=1.8)  # fmt: skip
    room(WALL_T, L - WALL_T, ya, yb, "走廊", "circulation")
    for end, x in ((west, -0.03), (east, L - WALL_T - 0.03)):  # end windows light the corridor
        box = w.solid(x, W / 2 - 0.6, 0.9, WALL_T + 0.06, 1.2, 1.5)
        add("IfcWindow", f"{label} 窗 {end}", [box], "window", OverallHeight=1.5, OverallWidth=1.2)
    if level == 1:  # the entrance: a double door in the south facade at the lobby
        a, b = bays[0]
        box = w.solid((a + b) / 2 - 1.0, -0.03, 0, 2.0, WALL_T + 0.06, 2.4)
        add("IfcDoor", f"1F 入口 {south}", [box], "door", OverallHeight=2.4, OverallWidth=2.0)
    f.create_entity(
        "IfcRelContainedInSpatialStructure", GlobalId=w.guid(f"{label}/contains"),
        RelatedElements=elements, RelatingStructure=storey,
    )  # fmt: skip
    f.create_entity(
        "IfcRelAggregates", GlobalId=w.guid(f"{label}/spaces"), RelatingObject=storey,
        RelatedObjects=spaces,
    )  # fmt: skip
    return storey


def _compass(v: tuple[float, float]) -> str:
    """The compass word (东南西北) nearest a direction in (E, N)."""
    angle = math.degrees(math.atan2(v[1], v[0])) % 360
    return "东北西南"[round(angle / 90) % 4]


def _window_centres(a: float, b: float) -> list[float]:
    """One window per 4 m of facade, spread evenly over the room's length."""
    n = max(1, int((b - a) // 4))
    step = (b - a) / n
    return [a + step * (j + 0.5) for j in range(n)]


def _stair(w: _Writer, add: Any, a: float, b: float, y0: float, y1: float, h: float) -> None:
    """A switchback stair in the stair room: two flights of steps and a landing."""
    rises = max(2, round(h / 0.17))
    per = rises // 2
    rise, tread, width = h / rises, 0.28, min(1.2, (y1 - y0 - 0.4) / 2)
    x0 = a + 0.3
    solids = []
    for k in range(per):  # up along +x, then back along -x beside it
        solids.append(w.solid(x0 + k * tread, y0 + 0.2, 0, tread, width, rise * (k + 1)))
    land = x0 + per * tread
    solids.append(w.solid(land, y0 + 0.2, rise * per - 0.15, 1.2, 2 * width, 0.15))
    for k in range(rises - per - 1):
        x = land - (k + 1) * tread
        solids.append(w.solid(x, y0 + 0.2 + width, rise * (per + k), tread, width, rise))
    if land + 1.2 <= b:
        add("IfcStair", "楼梯", solids, "stair", PredefinedType="HALF_TURN_STAIR")
