"""``cimtwin import ifc FILE``: an IFC2x3 / IFC4 / IFC4.3 model into the twin.

One model per import, all or nothing, recorded in ``import_batch`` like every import: the file
is read (:mod:`.elements`), placed (:mod:`.georef`; the report says which georeference path
was used, with every parameter, and ``bim_model.georef`` keeps them), checked against the
storage CRS's area of use (a model landing elsewhere is refused naming where, nothing is
written), and written (:mod:`.store`). The dataset defaults to ``ifc:/folder/stem`` of the
file (``--dataset`` names it; the model's name is the file's name unless ``--dataset``);
importing it again replaces the model, its rooms and the building row it made.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cimtwin.errors import NotFoundError
from cimtwin.importers.base import ImportOptions, Prepared
from cimtwin.importers.ifc.elements import IfcReadError, ModelContent, open_model, read_model
from cimtwin.importers.ifc.georef import Georeference, GeorefError, StoragePlacer, parse_origin
from cimtwin.importers.ifc.locate import UserPlacement, find_georeference
from cimtwin.importers.ifc.store import (
    ElementRow,
    PlacedModel,
    SpaceRow,
    StoreyRow,
    as_multi,
    footprint,
    solid_volume,
    write_model,
)
from cimtwin.importers.report import Report
from cimtwin.importers.runner import ImportFailed
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.bim import BimElement, BimModel, BimSpace, BimStorey
from cimtwin.spatial.building import Building, BuildingRepresentation

log = logging.getLogger(__name__)

INFO = "info"  # a report line that is neither error nor warning: how the model was placed
VERTICAL_DATUM = "EPSG:5737"  # what stored heights are, whatever the file's datum was


def user_placement(options: ImportOptions) -> UserPlacement:
    origin = parse_origin(options.origin) if options.origin else None
    if options.rotation is not None and origin is None:
        raise GeorefError("--rotation needs --origin (it turns the model about that point)")
    return UserPlacement(
        origin=origin,
        rotation_deg=float(options.rotation or 0.0),
        crs=options.crs,
        height_datum=options.height_datum,
    )


def _corners(content: ModelContent) -> np.ndarray:
    pts = np.concatenate([e.triangles.reshape(-1, 3) for e in content.elements])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )


def place(
    path: Path, content: ModelContent, georef: Georeference, options: ImportOptions
) -> PlacedModel:
    """The model in storage coordinates: every vertex through the georeference."""
    srid = crs_mod.storage_srid()
    placer = StoragePlacer(georef, srid)
    if not content.elements:
        raise GeorefError("the model has no element with geometry")
    corners = _corners(content)
    placer.check_area(corners, str(path))
    sizes = [len(e.triangles) for e in content.elements]
    flat = np.concatenate([e.triangles.reshape(-1, 3) for e in content.elements])
    placed = placer.to_storage(flat).reshape(-1, 3, 3)
    offsets = np.cumsum([0, *sizes])
    centre = corners.mean(axis=0)

    def height_at(z: float) -> float:
        return float(placer.to_storage(np.array([[centre[0], centre[1], z]]))[0, 2])

    storey_z = {s.guid: height_at(s.elevation) for s in content.storeys}
    storey_name = {s.guid: s.name for s in content.storeys}
    rows: list[ElementRow] = []
    spaces: list[SpaceRow] = []
    top_of: dict[str, float] = {}
    for i, e in enumerate(content.elements):
        tris = placed[offsets[i] : offsets[i + 1]]
        fp = footprint(tris)
        if e.storey_guid:
            top_of[e.storey_guid] = max(top_of.get(e.storey_guid, -1e9), float(tris[:, :, 2].max()))
        rows.append(
            ElementRow(
                guid=e.guid,
                ifc_class=e.ifc_class,
                name=e.name,
                ifc_type=e.ifc_type,
                storey_guid=e.storey_guid,
                storey_name=storey_name.get(e.storey_guid or ""),
                storey_elevation_m=storey_z.get(e.storey_guid or ""),
                psets=e.psets,
                quantities=e.quantities,
                color=e.color,
                triangles=tris,
                footprint=fp,
            )
        )
        if e.ifc_class == "IfcSpace":
            area = e.space_area * content.area_unit_m2 if e.space_area else None
            source = e.space_area_name
            volume = e.space_volume * content.volume_unit_m3 if e.space_volume else None
            floor, ceiling = float(tris[:, :, 2].min()), float(tris[:, :, 2].max())
            if area is None and fp is not None:
                area, source = float(fp.area), "geometry"
            if volume is None:
                volume = solid_volume(tris)
            spaces.append(
                SpaceRow(
                    e.guid,
                    e.storey_guid,
                    e.name,
                    e.long_name,
                    e.usage,
                    area,
                    source,
                    volume,
                    floor,
                    ceiling,
                    fp,
                )
            )
    storeys = []
    ordered = sorted(content.storeys, key=lambda s: s.position)
    for k, s in enumerate(ordered):
        if k + 1 < len(ordered):
            height: float | None = storey_z[ordered[k + 1].guid] - storey_z[s.guid]
        elif s.guid in top_of:
            height = top_of[s.guid] - storey_z[s.guid]
        else:
            height = None
        storeys.append(StoreyRow(s.guid, s.name, storey_z[s.guid], height, s.position))
    import shapely

    prints = [r.footprint for r in rows if r.footprint is not None and r.ifc_class != "IfcSpace"]
    model_fp = as_multi(shapely.union_all(prints, grid_size=1e-3)) if prints else None
    with_spaces = {sp.storey_guid for sp in spaces if sp.storey_guid}
    floors = len(with_spaces) or sum(1 for s in content.storeys if s.elevation >= 0)
    zs = placed[:, :, 2]
    return PlacedModel(
        name=options.dataset or path.name,
        source_file=str(path.resolve()),
        ifc_schema=content.schema,
        georef_path=georef.path,
        map_crs=georef.map_crs_label,
        georef=georef.record(),
        building_code=options.building,
        building_guid=content.building_guid,
        building_name=content.building_name,
        base_elevation_m=height_at(0.0),
        min_z=float(zs.min()),
        max_z=float(zs.max()),
        footprint=model_fp,
        floors=floors,
        storeys=storeys,
        spaces=spaces,
        elements=rows,
    )


class IfcImporter:
    """One IFC file per import; the model (and the building row it made) replaced as a whole."""

    kind = "ifc"
    # parents first: the runner deletes a replaced batch's rows in reverse order
    models = (Building, BuildingRepresentation, BimModel, BimStorey, BimSpace, BimElement)

    def options_fingerprint(self, options: ImportOptions) -> str:
        """The options that move the model: a re-import with another --origin is no re-run of
        an unchanged file."""
        keys = ("origin", "rotation", "crs", "height_datum", "building")
        return json.dumps({k: getattr(options, k) for k in keys}, sort_keys=True)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        if len(paths) != 1:
            raise ImportFailed(
                f"ifc: give one IFC file per import, not {len(paths)}; nothing was written"
            )
        path = paths[0]
        try:
            user = user_placement(options)
            model = open_model(str(path))
            georef = find_georeference(model, user, crs_mod.storage_crs())
            # the local origin first: a model on another continent is refused before its
            # geometry is built (the whole extent is checked again once it is)
            StoragePlacer(georef, crs_mod.storage_srid()).check_area(np.zeros((1, 3)), str(path))
            content = read_model(str(path), model, options.progress)
            placed = place(path, content, georef, options)
        except (GeorefError, IfcReadError) as exc:
            text = str(exc)
            where = "" if text.startswith(str(path)) else f"{path}: "
            raise ImportFailed(f"{where}{text}; nothing was written") from exc
        how = (
            f"placed by {georef.path} into {georef.map_crs_label}; "
            f"rotation {georef.conversion.rotation_deg:.6g} deg, scale "
            f"{georef.conversion.scale:.6g} (project {georef.project_unit_m:g} m, map "
            f"{georef.map_unit_m:g} m); heights: {georef.height_rule}; " + "; ".join(georef.notes)
        )
        report.add(path, None, "ifc-georeference", INFO, how)
        log.info("%s: %s", path, how)
        for w in georef.warnings:
            report.warning(path, None, "ifc-height-datum", w)
        for element, message in content.problems:
            report.warning(path, element, "ifc-geometry", message)
        bbox = None
        if placed.footprint is not None:
            bbox = tuple(float(v) for v in placed.footprint.bounds)
        return Prepared(
            format=f"ifc ({content.schema})",
            source_crs=f"{georef.map_crs_label} via {georef.path}",
            feature_count=len(placed.elements),
            extra={"model": placed, "vertical_datum": VERTICAL_DATUM},
            bbox=bbox,  # type: ignore[arg-type]
        )

    def write(self, conn, prepared: Prepared, batch_id: int) -> dict[str, int]:
        from cimtwin.spatial.provenance import batch_dataset

        dataset = batch_dataset(conn, batch_id)
        try:
            return write_model(
                conn, prepared.extra["model"], dataset, crs_mod.storage_srid(), batch_id
            )
        except NotFoundError as exc:
            raise ImportFailed(f"{exc}; nothing was written") from exc
