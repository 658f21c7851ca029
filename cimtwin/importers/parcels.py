"""Land parcels: GB 50137 land use checked against the dictionary, planning controls sane."""

from __future__ import annotations

from pathlib import Path

import shapely

from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import (
    as_multipolygon,
    bbox,
    check_unique,
    numeric_column,
    single_layer,
)
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import text_column
from cimtwin.reference import land_use_classes
from cimtwin.spatial import bulk
from cimtwin.spatial.parcel import Parcel


class ParcelsImporter(CopyWriter):
    kind = "parcels"
    models = (Parcel,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        layer, attrs, geoms, src, ids = single_layer(
            paths,
            "parcels",
            ("Polygon", "MultiPolygon"),
            ["parcel_code", "land_use"],
            options,
            report,
            key="parcel_code",
        )
        label = layer.label
        for col in ("parcel_code", "land_use"):
            attrs[col] = text_column(attrs[col])
        check_unique(attrs, "parcel_code", label, ids, report)
        unknown = (
            attrs["land_use"].notna() & ~attrs["land_use"].isin(list(land_use_classes()))
        ).to_numpy()
        report.add_many(
            label,
            ids[unknown],
            "land-use-unknown",
            ERROR,
            [f"land use {v!r} is not a GB 50137 class" for v in attrs["land_use"][unknown]],
        )
        report.add_many(
            label,
            ids[attrs["land_use"].isna().to_numpy()],
            "land-use-missing",
            ERROR,
            "no land use",
        )
        far = numeric_column(attrs, "planned_plot_ratio", label, ids, report, 0, 30, WARNING)
        hlim = numeric_column(attrs, "height_limit_m", label, ids, report, 0, 700, WARNING)
        mg = as_multipolygon(geoms)
        frame = attrs[["parcel_code", "land_use"]].assign(
            area_m2=shapely.area(mg),
            planned_plot_ratio=far.to_numpy(),
            height_limit_m=hlim.to_numpy(),
            geom=bulk.geometry_hex(mg),
        )
        return Prepared(
            format=layer.path.suffix.lstrip("."),
            source_crs=src.to_string(),
            feature_count=len(frame),
            frames={Parcel: frame},
            extra={"shapes": {Parcel: mg}},
            bbox=bbox(mg),
        )
