"""Street, community and work-grid polygons (and named districts), with their hierarchy checked:
codes prefix-consistent, every grid inside its community, every community inside its street."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from cimtwin.errors import UserError
from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import as_multipolygon, bbox, feature_ids, prepare_layer
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import (
    Layer,
    canonical_frame,
    list_layers,
    load_mapping,
    read_layer,
    text_column,
)
from cimtwin.settings import get_settings
from cimtwin.spatial import bulk
from cimtwin.spatial.admin_grid import Community, District, Street, WorkGrid

LEVELS = ("street", "community", "work_grid", "district")
#: share of a child's area allowed outside its parent (digitising slivers)
CONTAINMENT_TOLERANCE = 0.005


def _pick_layers(paths: list[Path]) -> dict[str, Layer]:
    """Layers by level, from layer names (GeoPackage) or file names (Shapefile etc.)."""
    found: dict[str, Layer] = {}
    for path in paths:
        names = list_layers(path)
        for name in names:
            key = name.lower()
            level = next(
                (
                    lv
                    for lv in LEVELS
                    if key == lv
                    or key.startswith(lv)
                    or (lv == "work_grid" and key in ("grid", "grids", "网格"))
                ),
                None,
            )
            if level is None and len(names) == 1:
                level = next((lv for lv in LEVELS if path.stem.lower().startswith(lv)), None)
            if level is None:
                continue
            if level in found:
                raise UserError(f"{path}: a second {level} layer ({name}); give one per level")
            found[level] = read_layer(path, name)
    if "work_grid" not in found:
        raise UserError(
            f"{', '.join(p.name for p in paths)}: no work_grid layer found "
            "(layers named street, community, work_grid, district)"
        )
    return found


class GridsImporter(CopyWriter):
    kind = "grids"
    models = (Street, Community, WorkGrid, District)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        mapping = load_mapping(options.mapping)
        layers = _pick_layers(paths)
        s = get_settings()
        n_grid = s.grid_code_digits
        digits = {"street": 9, "community": 12, "work_grid": n_grid}
        parent = {
            "community": ("street", "street_code"),
            "work_grid": ("community", "community_code"),
        }
        needed = {
            "street": ["code", "name"],
            "community": ["code", "name"],
            "work_grid": ["code", "name"],
            "district": ["slug", "name"],
        }
        frames: dict[str, pd.DataFrame] = {}
        geoms: dict[str, np.ndarray] = {}
        src_crs = None
        for level, layer in layers.items():
            attrs = canonical_frame(layer.frame, level, mapping, needed[level], layer.label)
            key = "slug" if level == "district" else "code"
            ids = feature_ids(layer, text_column(attrs[key]) if key in attrs else None)
            g, src_crs = prepare_layer(layer, ("Polygon", "MultiPolygon"), options, report, ids)
            for col in attrs.columns:
                attrs[col] = text_column(attrs[col])
            key = "slug" if level == "district" else "code"
            dup = attrs[key].duplicated(keep=False) & attrs[key].notna()
            report.add_many(
                layer.label,
                ids[dup.to_numpy()],
                "duplicate-code",
                ERROR,
                [f"{key} {v} appears more than once" for v in attrs[key][dup]],
            )
            blank = attrs[key].isna().to_numpy()
            report.add_many(layer.label, ids[blank], "missing-code", ERROR, f"no {key}")
            if level in digits:
                n = digits[level]
                bad = attrs[key].notna() & ~attrs[key].str.fullmatch(rf"\d{{{n}}}").fillna(False)
                report.add_many(
                    layer.label,
                    ids[bad.to_numpy()],
                    "code-format",
                    ERROR,
                    [f"{level} code {v!r} is not {n} digits" for v in attrs[key][bad]],
                )
                wrong_county = attrs[key].notna() & ~attrs[key].str.startswith(s.county_code)
                report.add_many(
                    layer.label,
                    ids[wrong_county.to_numpy()],
                    "code-county",
                    WARNING,
                    f"code is not in county {s.county_code}",
                )
            if level in parent:
                plevel, pcol = parent[level]
                if pcol not in attrs:  # derive the parent code from the code prefix
                    attrs[pcol] = attrs["code"].str[: digits[plevel]]
                else:
                    mismatch = (
                        attrs[pcol].notna()
                        & attrs["code"].notna()
                        & (attrs["code"].str[: digits[plevel]] != attrs[pcol])
                    )
                    report.add_many(
                        layer.label,
                        ids[mismatch.to_numpy()],
                        "code-prefix",
                        ERROR,
                        [
                            f"code {c} does not start with its {plevel} code {p}"
                            for c, p in zip(
                                attrs["code"][mismatch], attrs[pcol][mismatch], strict=True
                            )
                        ],
                    )
            attrs["_fid"] = ids
            frames[level], geoms[level] = attrs, g
        self._check_hierarchy(frames, geoms, layers, report)
        out: dict = {}
        models = {
            "street": Street,
            "community": Community,
            "work_grid": WorkGrid,
            "district": District,
        }
        for level, attrs in frames.items():
            df = attrs.drop(columns=["_fid"]).copy()
            mg = as_multipolygon(geoms[level])
            if level == "work_grid":
                df["area_m2"] = shapely.area(mg)
            if level == "district" and "kind" not in df:
                df["kind"] = "district"
            df["geom"] = bulk.geometry_hex(mg)
            out[models[level]] = df
        all_geoms = np.concatenate([geoms[lv] for lv in frames])
        return Prepared(
            format=",".join(sorted({layer.path.suffix.lstrip(".") for layer in layers.values()})),
            source_crs=src_crs.to_string() if src_crs else "",
            feature_count=sum(len(f) for f in frames.values()),
            frames=out,
            bbox=bbox(all_geoms),
        )

    @staticmethod
    def _check_hierarchy(frames, geoms, layers, report: Report) -> None:
        for child, parent_level, pcol in (
            ("community", "street", "street_code"),
            ("work_grid", "community", "community_code"),
        ):
            if child not in frames or parent_level not in frames:
                continue
            c, p = frames[child], frames[parent_level]
            lookup = dict(zip(p["code"], range(len(p)), strict=True))
            label = layers[child].label
            for i, (code, pcode) in enumerate(zip(c["code"], c[pcol], strict=True)):
                fid = c["_fid"].iloc[i]
                j = lookup.get(pcode)
                if j is None:
                    report.error(
                        label,
                        fid,
                        "hierarchy-parent",
                        f"{child} {code}: its {parent_level} {pcode} is not in the data",
                    )
                    continue
                g, pg = geoms[child][i], geoms[parent_level][j]
                if g is None or pg is None or g.is_empty or not g.is_valid or not pg.is_valid:
                    continue
                outside = g.difference(pg).area
                if outside > CONTAINMENT_TOLERANCE * g.area:
                    report.error(
                        label,
                        fid,
                        "hierarchy-containment",
                        f"{child} {code}: {outside:.0f} m2 lies outside {parent_level} {pcode}",
                    )
        if "work_grid" in frames:
            g = geoms["work_grid"]
            ok = np.array([x is not None and x.is_valid for x in g])
            tree = shapely.STRtree(g[ok])
            a, b = tree.query(g[ok], predicate="overlaps")
            idx = np.flatnonzero(ok)
            codes = frames["work_grid"]["code"].to_numpy()
            fids = frames["work_grid"]["_fid"].to_numpy()
            for i, j in zip(idx[a], idx[b], strict=True):
                if i < j:
                    inter = g[i].intersection(g[j]).area
                    if inter > CONTAINMENT_TOLERANCE * min(g[i].area, g[j].area):
                        report.warning(
                            layers["work_grid"].label,
                            fids[i],
                            "grid-overlap",
                            f"grid {codes[i]} overlaps grid {codes[j]} by {inter:.0f} m2",
                        )
