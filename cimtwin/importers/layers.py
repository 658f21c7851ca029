"""Shared steps for GIS layers: pick the CRS, check coordinates, transform to storage, repair
or refuse invalid geometries, and turn geometries into EWKB for COPY."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from cimtwin.errors import UserError
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import Layer, note_encoding
from cimtwin.settings import get_settings
from cimtwin.spatial import crs as crs_mod


def source_crs(layer_crs: str | None, options: ImportOptions, label: str) -> CRS:
    """The file's CRS, or ``--crs``; a file with neither is refused."""
    if options.crs:
        try:
            return crs_mod.parse_crs(options.crs)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    if not layer_crs:
        raise UserError(f"{label}: the file declares no CRS (no .prj or SRS); pass --crs EPSG:xxxx")
    return CRS.from_user_input(layer_crs)


def coordinates_to_storage(
    x: np.ndarray, y: np.ndarray, src: CRS, options: ImportOptions
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray, str]]]:
    """Source coordinates into the storage CRS, the one path for nodes, vertices and features:
    ``--local-transform`` first, then the plausibility checks against ``src`` (rule, offending
    mask, message), then the CRS transform. Coordinates that are not finite stay NaN."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if options.local_transform:
        x, y = crs_mod.Similarity4.parse(options.local_transform).apply(x, y)
    problems = crs_mod.implausible_coordinates(x, y, src)
    if src.to_epsg() == crs_mod.storage_srid():
        return x, y, problems
    ex, ny = np.full(len(x), np.nan), np.full(len(y), np.nan)
    finite = np.isfinite(x) & np.isfinite(y)
    tr = crs_mod.transformer(
        crs_mod.crs_label(src) if src.to_epsg() else src.to_wkt(), crs_mod.storage_srid()
    )
    ex[finite], ny[finite] = crs_mod.transform_arrays(tr, x[finite], y[finite])
    return ex, ny, problems


def to_storage(
    geoms: np.ndarray,
    src: CRS,
    options: ImportOptions,
    report: Report,
    label: str,
    ids: FeatureLabels,
) -> np.ndarray:
    """Check every vertex against ``src`` and transform it into the storage CRS (vectorised);
    a feature with any implausible vertex is reported once per rule."""
    geoms = np.asarray(geoms, dtype=object)
    has_z = bool(shapely.has_z(geoms).any()) if len(geoms) else False
    coords, owner = shapely.get_coordinates(geoms, include_z=has_z, return_index=True)
    ex, ny, problems = coordinates_to_storage(coords[:, 0], coords[:, 1], src, options)
    for rule, mask, message in problems:
        report.add_many(label, ids[np.unique(owner[mask])], rule, ERROR, message)
    if not options.local_transform and src.to_epsg() == crs_mod.storage_srid():
        return geoms  # already in the storage CRS
    out = coords.copy()
    out[:, 0], out[:, 1] = ex, ny
    return shapely.transform(geoms, lambda _: out, include_z=has_z)


def check_geometries(
    geoms: np.ndarray,
    allowed: tuple[str, ...],
    report: Report,
    label: str,
    ids: FeatureLabels,
    strict: bool,
) -> np.ndarray:
    """Missing/empty/wrong-type geometries are errors; invalid polygons are repaired with a
    warning (an error under --strict). Returns the repaired array."""
    geoms = np.asarray(geoms, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(
        np.where(shapely.is_missing(geoms), shapely.Point(), geoms)
    )
    if missing.any():
        report.add_many(label, ids[missing], "geometry-missing", ERROR, "feature has no geometry")
    types = np.array(shapely.get_type_id(geoms))
    names = np.array(
        [
            "Point",
            "LineString",
            "LinearRing",
            "Polygon",
            "MultiPoint",
            "MultiLineString",
            "MultiPolygon",
            "GeometryCollection",
        ]
    )
    type_names = np.where(types >= 0, names[np.clip(types, 0, 7)], "None")
    wrong = ~missing & ~np.isin(type_names, allowed)
    if wrong.any():
        report.add_many(
            label,
            ids[wrong],
            "geometry-type",
            ERROR,
            [f"{t} where {'/'.join(allowed)} is expected" for t in type_names[wrong]],
        )
    ok = ~missing & ~wrong
    # None as a 0-d object array: numpy's stubs do not take a bare None as an array
    invalid = ok & ~shapely.is_valid(np.where(ok, geoms, np.array(None, dtype=object)))
    if invalid.any():
        reasons = shapely.is_valid_reason(geoms[invalid])
        sev = ERROR if strict else WARNING
        report.add_many(
            label,
            ids[invalid],
            "geometry-invalid",
            sev,
            [f"invalid geometry ({r})" + ("" if strict else "; repaired") for r in reasons],
        )
        fixed = shapely.make_valid(geoms[invalid])
        if "MultiPolygon" in allowed or "Polygon" in allowed:
            fixed = np.array([_polygonal(g) for g in fixed], dtype=object)
        geoms = geoms.copy()
        geoms[invalid] = fixed
    return geoms


def _polygonal(g: shapely.Geometry) -> shapely.Geometry:
    """Keep the areal part of make_valid's output (it may add slivers of lines or points)."""
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    polys = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else g


def as_multipolygon(geoms: np.ndarray) -> np.ndarray:
    geoms = np.asarray(geoms, dtype=object)
    single = shapely.get_type_id(geoms) == 3
    out = geoms.copy()
    out[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
    return out


def bbox(geoms: np.ndarray) -> tuple[float, float, float, float] | None:
    if len(geoms) == 0:
        return None
    b = shapely.total_bounds(np.asarray(geoms, dtype=object))
    if not np.isfinite(b).all():
        return None
    x0, y0, x1, y1 = (float(v) for v in b)
    return x0, y0, x1, y1


class FeatureLabels:
    """How problems name features: the FID, with the feature's own identifier when it has one
    (``27 (DK440309000027)``). Indexed like an array; labels are made only for the features
    a problem is reported on, not for every feature of a large layer."""

    def __init__(self, fids: np.ndarray, keys: np.ndarray | None) -> None:
        self.fids, self.keys = fids, keys

    def __len__(self) -> int:
        return len(self.fids)

    def __getitem__(self, index: Any) -> FeatureLabels:
        return FeatureLabels(self.fids[index], None if self.keys is None else self.keys[index])

    def __iter__(self) -> Iterator[str]:
        if self.keys is None:
            yield from (str(f) for f in self.fids)
            return
        for f, k in zip(self.fids, self.keys, strict=True):
            yield f"{f} ({k})" if k is not None and k == k else str(f)


def feature_ids(layer: Layer, keys: pd.Series | None = None) -> FeatureLabels:
    """Labels for the layer's features (see :class:`FeatureLabels`)."""
    fids = np.asarray(layer.frame.index)
    return FeatureLabels(fids, None if keys is None else np.asarray(keys, dtype=object))


def prepare_layer(
    layer: Layer,
    allowed: tuple[str, ...],
    options: ImportOptions,
    report: Report,
    ids: FeatureLabels | None = None,
) -> tuple[np.ndarray, CRS]:
    """The layer's geometries checked and in the storage CRS, plus the source CRS."""
    src = source_crs(layer.crs, options, layer.label)
    note_encoding(layer, report)
    ids = FeatureLabels(np.asarray(layer.frame.index), None) if ids is None else ids
    geoms = np.asarray(layer.frame.geometry.values, dtype=object)
    geoms = check_geometries(geoms, allowed, report, layer.label, ids, options.strict)
    good = ~(
        shapely.is_missing(geoms)
        | shapely.is_empty(np.where(shapely.is_missing(geoms), shapely.Point(), geoms))
    )
    out = np.array(geoms, dtype=object)
    if good.any():
        out[good] = to_storage(geoms[good], src, options, report, layer.label, ids[good])
    return out, src


def single_layer(
    paths: list[Path],
    section: str,
    allowed: tuple[str, ...],
    needed: list[str],
    options: ImportOptions,
    report: Report,
    layer_name: str | None = None,
    key: str | None = None,
) -> tuple[Layer, pd.DataFrame, np.ndarray, CRS, FeatureLabels]:
    """Read one layer, map its columns, check and transform its geometries; also returns the
    feature labels problems are reported under (FID and the ``key`` column's value)."""
    from cimtwin.importers.sources import canonical_frame, list_layers, load_mapping, read_layer

    if len(paths) != 1:
        raise UserError(f"{section}: give one file (got {len(paths)})")
    path = paths[0]
    names = list_layers(path)
    if layer_name is None or layer_name not in names:
        layer_name = layer_name if layer_name in names else names[0]
    layer = read_layer(path, layer_name if len(names) > 1 else None)
    attrs = canonical_frame(
        layer.frame, section, load_mapping(options.mapping), needed, layer.label
    )
    from cimtwin.importers.sources import text_column

    ids = feature_ids(layer, text_column(attrs[key]) if key and key in attrs else None)
    geoms, src = prepare_layer(layer, allowed, options, report, ids)
    return layer, attrs, geoms, src, ids


@dataclass
class LayerBatch:
    """One batch of a layer read by :func:`layer_batches`, as :func:`single_layer` gives it."""

    layer: Layer  # its frame: this batch's features
    attrs: pd.DataFrame
    geoms: np.ndarray
    src: CRS
    ids: FeatureLabels
    start: int  # position of its first feature in the layer


def layer_batches(
    paths: list[Path],
    section: str,
    allowed: tuple[str, ...],
    needed: list[str],
    options: ImportOptions,
    report: Report,
    key: str | None = None,
) -> Iterator[LayerBatch]:
    """:func:`single_layer` a batch of ``CIMTWIN_IMPORT_CHUNK_ROWS`` features at a time, so a
    layer of any size is checked or written in bounded memory; the checks are those of a
    whole layer, each batch's problems added to ``report`` in file order."""
    from cimtwin.importers.sources import (
        canonical_frame,
        list_layers,
        load_mapping,
        read_layer_batches,
        text_column,
    )

    if len(paths) != 1:
        raise UserError(f"{section}: give one file (got {len(paths)})")
    path = paths[0]
    names = list_layers(path)
    mapping = load_mapping(options.mapping)
    start = 0
    rows = get_settings().import_chunk_rows
    for layer in read_layer_batches(path, names[0] if len(names) > 1 else None, rows):
        attrs = canonical_frame(layer.frame, section, mapping, needed, layer.label)
        ids = feature_ids(layer, text_column(attrs[key]) if key and key in attrs else None)
        geoms, src = prepare_layer(layer, allowed, options, report, ids)
        yield LayerBatch(layer, attrs, geoms, src, ids, start)
        start += len(attrs)


def check_unique(
    attrs: pd.DataFrame, col: str, label: str, ids: FeatureLabels, report: Report
) -> None:
    """Blank or repeated identifiers are errors: they are the stable feature ids."""
    blank = attrs[col].isna().to_numpy()
    report.add_many(label, ids[blank], "missing-id", ERROR, f"no {col}")
    dup = (attrs[col].duplicated(keep=False) & attrs[col].notna()).to_numpy()
    report.add_many(
        label,
        ids[dup],
        "duplicate-id",
        ERROR,
        [f"{col} {v} appears more than once" for v in attrs[col][dup]],
    )


def numeric_column(
    attrs: pd.DataFrame,
    col: str,
    label: str,
    ids: FeatureLabels,
    report: Report,
    low: float | None = None,
    high: float | None = None,
    severity: str = ERROR,
) -> pd.Series:
    """A column as floats; text that is not a number is an error, values out of range
    a problem of ``severity``."""
    if col not in attrs:
        return pd.Series(np.nan, index=attrs.index)
    raw = attrs[col]
    vals = pd.to_numeric(raw, errors="coerce")
    bad = (raw.notna() & vals.isna()).to_numpy()
    report.add_many(
        label, ids[bad], "not-a-number", ERROR, [f"{col} {v!r} is not a number" for v in raw[bad]]
    )
    out = np.zeros(len(vals), dtype=bool)
    if low is not None:
        out |= (vals < low).to_numpy()
    if high is not None:
        out |= (vals > high).to_numpy()
    report.add_many(
        label,
        ids[out],
        f"{col}-range",
        severity,
        [f"{col} {v} outside {low}..{high}" for v in vals[out]],
    )
    return vals
