"""Building footprints with heights and floors (and underground structures when the file has
them); heights, floors and storey heights checked for sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import (
    as_multipolygon,
    bbox,
    check_unique,
    feature_ids,
    numeric_column,
    prepare_layer,
    single_layer,
)
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import canonical_frame, list_layers, load_mapping, read_layer
from cimtwin.importers.sources import text_column as txt
from cimtwin.spatial import bulk
from cimtwin.spatial.base import Base
from cimtwin.spatial.building import Building, UndergroundStructure

#: storey heights outside this range are reported (m); halls and stations are taller
STOREY_RANGE = (2.2, 15.0)


class BuildingsImporter(CopyWriter):
    kind = "buildings"
    models = (Building, UndergroundStructure)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        layer, attrs, geoms, src, ids = single_layer(
            paths[:1],
            "buildings",
            ("Polygon", "MultiPolygon"),
            ["building_code", "height_m"],
            options,
            report,
            layer_name="building",
            key="building_code",
        )
        label = layer.label
        for col in ("building_code", "name", "address", "use"):
            if col in attrs:
                attrs[col] = txt(attrs[col])
        check_unique(attrs, "building_code", label, ids, report)
        height = numeric_column(attrs, "height_m", label, ids, report, 0.5, 700)
        floors = numeric_column(attrs, "floors", label, ids, report, 0, 200)
        ug = numeric_column(attrs, "underground_floors", label, ids, report, 0, 20)
        report.add_many(label, ids[height.isna().to_numpy()], "height-missing", ERROR, "no height")
        storey = (height / floors.where(floors > 0)).to_numpy()
        odd = np.isfinite(storey) & ((storey < STOREY_RANGE[0]) | (storey > STOREY_RANGE[1]))
        report.add_many(
            label,
            ids[odd],
            "storey-height",
            WARNING,
            [
                f"{h:g} m over {f:g} floors is {s:.1f} m a floor"
                for h, f, s in zip(height[odd], floors[odd], storey[odd], strict=True)
            ],
        )
        mg = as_multipolygon(geoms)
        frame = pd.DataFrame(
            {
                "building_code": attrs["building_code"],
                "name": attrs.get("name"),
                "address": attrs.get("address"),
                "use": attrs.get("use"),
                "height_m": height,
                "floors": floors.astype("Int64"),
                "underground_floors": ug.fillna(0).astype("Int64"),
                "base_elevation_m": numeric_column(
                    attrs, "base_elevation_m", label, ids, report, -100, 9000
                ),
                "floor_area_m2": numeric_column(attrs, "floor_area_m2", label, ids, report, 0),
                "residents": numeric_column(
                    attrs, "residents", label, ids, report, 0, 100000
                ).astype("Int64"),
                "build_year": numeric_column(
                    attrs, "build_year", label, ids, report, 1800, 2100, WARNING
                ).astype("Int64"),
            },
            index=attrs.index,
        )
        missing_area = frame["floor_area_m2"].isna()
        frame.loc[missing_area, "floor_area_m2"] = (
            shapely.area(mg)[missing_area.to_numpy()] * frame.loc[missing_area, "floors"]
        ).astype(float)
        frame["geom"] = bulk.geometry_hex(mg)
        frame = frame.rename(columns={"geom": "footprint"})
        frames: dict[type[Base], pd.DataFrame] = {Building: frame}
        shapes: dict[type[Base], np.ndarray] = {Building: mg}
        boxes = [mg]
        # underground structures ride along in the same GeoPackage
        if "underground_structure" in list_layers(paths[0]):
            us_layer = read_layer(paths[0], "underground_structure")
            us = canonical_frame(
                us_layer.frame,
                "underground_structure",
                load_mapping(options.mapping),
                ["code", "kind", "name", "top_elevation_m", "bottom_elevation_m"],
                us_layer.label,
            )
            uids = feature_ids(us_layer, txt(us["code"]))
            ug_geoms, _ = prepare_layer(
                us_layer, ("Polygon", "MultiPolygon"), options, report, uids
            )
            for col in ("code", "kind", "name"):
                us[col] = txt(us[col])
            check_unique(us, "code", us_layer.label, uids, report)
            top = numeric_column(us, "top_elevation_m", us_layer.label, uids, report)
            bot = numeric_column(us, "bottom_elevation_m", us_layer.label, uids, report)
            inverted = (bot >= top).to_numpy()
            report.add_many(
                us_layer.label,
                uids[inverted],
                "depth-range",
                ERROR,
                "bottom elevation is not below the top",
            )
            umg = as_multipolygon(ug_geoms)
            frames[UndergroundStructure] = pd.DataFrame(
                {
                    "code": us["code"],
                    "kind": us["kind"],
                    "name": us["name"],
                    "top_elevation_m": top,
                    "bottom_elevation_m": bot,
                    "footprint": bulk.geometry_hex(umg),
                }
            )
            boxes.append(umg)
        all_geoms = np.concatenate(boxes)
        return Prepared(
            format=layer.path.suffix.lstrip("."),
            source_crs=src.to_string(),
            feature_count=sum(len(f) for f in frames.values()),
            frames=frames,
            extra={"shapes": shapes},
            bbox=bbox(all_geoms),
        )
