"""Reading an IFC model: elements with their triangulated geometry, storeys, spaces.

Geometry comes from IfcOpenShell's geometry iterator on every core
(``ifcopenshell.geom.iterator`` with ``multiprocessing.cpu_count()`` processes), in world
coordinates (placements applied, openings cut) and converted back to project length units, the
units the map conversion is written for. Property sets and quantities are read with
``ifcopenshell.util.element.get_psets``; everything here is in local project coordinates, the
georeference is applied by the caller.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimtwin.errors import IfcReadError

#: classes whose geometry is not the model's (voids cut from walls, the site's terrain)
SKIPPED_CLASSES = ("IfcOpeningElement", "IfcSite", "IfcVirtualElement")
#: the standard quantities holding a space's floor area and volume, best first; other sets
#: (Revit's "GSA BIM Area", measured to wall centres) stay in the element's quantities only
AREA_QUANTITIES = ("NetFloorArea", "GrossFloorArea")
VOLUME_QUANTITIES = ("NetVolume", "GrossVolume")


@dataclass
class Storey:
    guid: str
    name: str | None
    elevation: float  # local z, project units
    position: int = 0


@dataclass
class Element:
    """One product with geometry, in local project units."""

    entity_id: int
    guid: str
    ifc_class: str
    name: str | None
    ifc_type: str | None
    storey_guid: str | None
    psets: dict[str, Any]
    quantities: dict[str, Any]
    color: str | None
    triangles: np.ndarray  # (n, 3, 3) local project units
    long_name: str | None = None
    usage: str | None = None
    space_area: float | None = None  # project area units from the file's quantities
    space_area_name: str | None = None
    space_volume: float | None = None


@dataclass
class ModelContent:
    schema: str
    project_unit_m: float
    area_unit_m2: float
    volume_unit_m3: float
    storeys: list[Storey]
    elements: list[Element]
    building_guid: str | None
    building_name: str | None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (element, message)


Advance = Callable[[int], Any]


def open_model(path: str) -> Any:
    """The file opened by IfcOpenShell, or an IfcReadError naming it."""
    import ifcopenshell

    try:
        return ifcopenshell.open(path)
    except Exception as exc:  # IfcOpenShell raises plain errors for files it cannot parse
        raise IfcReadError(f"{path}: not an IFC file IfcOpenShell can read ({exc})") from exc


def _jsonable(value: Any) -> Any:
    """JSON-safe copies of property values (JSONB has no NaN, no entity instances)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _storey_of(element: Any) -> Any:
    """The IfcBuildingStorey an element is in: its spatial container, or (for spaces and parts
    of assemblies) the storey its aggregate chain leads to."""
    import ifcopenshell.util.element as ue

    current = element
    for _ in range(16):  # spatial trees are shallow; a cycle in a broken file must end
        if current.is_a("IfcBuildingStorey"):
            return current
        container = ue.get_container(current)
        if container is not None:
            current = container
            continue
        parent = ue.get_aggregate(current)
        if parent is None:
            return None
        current = parent
    return None


def _color(geometry: Any) -> str | None:
    """The colour of most of a shape's faces: #rrggbb, #rrggbbaa when transparent."""
    materials = list(geometry.materials)
    if not materials:
        return None
    ids = list(geometry.material_ids)
    index = Counter(ids).most_common(1)[0][0] if ids else 0
    if not 0 <= index < len(materials):
        return None
    m = materials[index]
    d = m.diffuse
    rgb = [max(0, min(255, round(float(c) * 255))) for c in (d.r(), d.g(), d.b())]
    text = "#" + "".join(f"{c:02x}" for c in rgb)
    t = float(m.transparency) if m.transparency == m.transparency else 0.0
    if t > 0:
        text += f"{max(0, min(255, round((1 - t) * 255))):02x}"
    return text


def _shapes(model: Any, project_unit_m: float, advance: Advance | None) -> dict[int, tuple]:
    """entity id -> (triangles (n, 3, 3) in project units, colour), on every core."""
    import ifcopenshell.geom

    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    settings.set("weld-vertices", False)
    out: dict[int, tuple] = {}
    iterator = ifcopenshell.geom.iterator(
        settings, model, multiprocessing.cpu_count(), exclude=list(SKIPPED_CLASSES)
    )
    if not iterator.initialize():
        return out  # nothing with geometry
    while True:
        shape = iterator.get()
        g = shape.geometry
        verts = np.asarray(g.verts, dtype=np.float64).reshape(-1, 3) / project_unit_m
        faces = np.asarray(g.faces, dtype=np.int64).reshape(-1, 3)
        if len(faces):
            out[shape.id] = (verts[faces], _color(g))
        if advance is not None:
            advance(1)
        if not iterator.next():
            break
    return out


def _first(qtos: dict[str, Any], names: tuple[str, ...]) -> tuple[float | None, str | None]:
    for name in names:
        for qset in qtos.values():
            v = qset.get(name) if isinstance(qset, dict) else None
            if isinstance(v, int | float) and math.isfinite(v) and v > 0:
                return float(v), name
    return None, None


def _space_usage(space: Any, psets: dict[str, Any]) -> str | None:
    if getattr(space, "ObjectType", None):
        return str(space.ObjectType)
    common = psets.get("Pset_SpaceCommon") or {}
    for key in ("Category", "OccupancyType", "Reference"):
        if common.get(key):
            return str(common[key])
    return None


def read_model(
    path: str,
    model: Any | None = None,
    progress: Callable[[str, int | None], Advance] | None = None,
) -> ModelContent:
    """Everything the importer stores, in local project units (no georeference applied)."""
    import ifcopenshell.util.element as ue
    import ifcopenshell.util.placement as up
    import ifcopenshell.util.unit as uu

    model = model if model is not None else open_model(path)
    project_unit = float(uu.calculate_unit_scale(model))
    area_unit = float(uu.calculate_unit_scale(model, "AREAUNIT"))
    volume_unit = float(uu.calculate_unit_scale(model, "VOLUMEUNIT"))
    problems: list[tuple[str, str]] = []

    storeys = []
    for s in model.by_type("IfcBuildingStorey"):
        try:
            z = float(up.get_local_placement(s.ObjectPlacement)[2, 3])
        except Exception:  # a storey without placement: its Elevation attribute
            z = float(s.Elevation or 0.0)
            problems.append((f"IfcBuildingStorey {s.GlobalId}", "no placement; Elevation used"))
        storeys.append(Storey(s.GlobalId, s.Name, z))
    storeys.sort(key=lambda s: s.elevation)
    for i, s in enumerate(storeys):
        s.position = i

    products = [
        p
        for p in model.by_type("IfcProduct")
        if p.Representation is not None and not any(p.is_a(c) for c in SKIPPED_CLASSES)
    ]
    advance = (
        progress(f"{path}: geometry of {len(products)} elements", len(products))
        if progress
        else None
    )
    shapes = _shapes(model, project_unit, advance)

    elements = []
    seen: set[str] = set()
    for p in products:
        guid = p.GlobalId or ""
        if len(guid) != 22:
            problems.append(
                (f"{p.is_a()} #{p.id()}", f"GlobalId {guid!r} is not 22 characters; skipped")
            )
            continue
        if guid in seen:
            problems.append((f"{p.is_a()} {guid}", "GlobalId used twice in the file"))
        seen.add(guid)
        found = shapes.get(p.id())
        if found is None:
            problems.append((f"{p.is_a()} {p.GlobalId}", "no geometry IfcOpenShell could build"))
            continue
        triangles, color = found
        storey = _storey_of(p)
        type_obj = ue.get_type(p)
        psets = _jsonable(ue.get_psets(p, psets_only=True))
        qtos = _jsonable(ue.get_psets(p, qtos_only=True))
        e = Element(
            entity_id=p.id(),
            guid=p.GlobalId,
            ifc_class=p.is_a(),
            name=p.Name,
            ifc_type=(type_obj.Name if type_obj is not None else None)
            or getattr(p, "ObjectType", None),
            storey_guid=storey.GlobalId if storey is not None else None,
            psets=psets,
            quantities=qtos,
            color=color,
            triangles=triangles,
        )
        if p.is_a("IfcSpace"):
            e.long_name = p.LongName
            e.usage = _space_usage(p, psets)
            e.space_area, e.space_area_name = _first(qtos, AREA_QUANTITIES)
            e.space_volume = _first(qtos, VOLUME_QUANTITIES)[0]
        elements.append(e)
    buildings = model.by_type("IfcBuilding")
    return ModelContent(
        schema=model.schema,
        project_unit_m=project_unit,
        area_unit_m2=area_unit,
        volume_unit_m3=volume_unit,
        storeys=storeys,
        elements=elements,
        building_guid=buildings[0].GlobalId if buildings else None,
        building_name=buildings[0].Name if buildings else None,
        problems=problems,
    )
