"""Incidents from GeoJSON (or any point layer): type, severity, status and time validated.

Incidents often come from web maps whose positions are GCJ-02 (Amap/高德 and others), a few
hundred metres off in Shenzhen: a file that says so is warned about, ``--from-gcj02`` converts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql
from pyproj import CRS

from cimtwin.errors import UserError
from cimtwin.importers import gcj02
from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import bbox, check_unique, single_layer
from cimtwin.importers.report import ERROR, Report
from cimtwin.importers.sources import load_mapping, resolve_columns, text_column
from cimtwin.spatial import bulk
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.building import Building
from cimtwin.spatial.city_component import CityComponent
from cimtwin.spatial.incident import FIRST_STATUS, INCIDENT_STATUSES, Incident
from cimtwin.spatial.pipeline_network import PipelineNode

GCJ02_NAMES = re.compile(r"gcj[-_ ]?0?2|amap|autonavi|高德|火星", re.IGNORECASE)
#: property names that may say where positions come from (their values are checked)
#: (model, geometry column) of the features incidents happen at
NEARBY_FEATURES = ((PipelineNode, "geom"), (CityComponent, "geom"), (Building, "footprint"))
OFFSET_CHECK_POINTS = 500
#: warn when the median distance to the nearest feature is at least this (m) and moving the
#: points back by the GCJ-02 offset brings them this many times closer
OFFSET_MIN_M = 25.0
OFFSET_GAIN = 0.25
SOURCE_PROPERTIES = re.compile(
    r"source|coord|crs|srs|datum|system|provider|来源|坐标", re.IGNORECASE
)

SEVERITY_NAMES = {
    "low": 1,
    "medium": 2,
    "high": 3,
    "critical": 4,
    "一般": 1,
    "较大": 2,
    "重大": 3,
    "特别重大": 4,
}


class IncidentsImporter(CopyWriter):
    kind = "incidents"
    models = (Incident,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        layer, attrs, geoms, src, ids = single_layer(
            paths,
            "incidents",
            ("Point",),
            ["incident_type", "severity", "title", "reported_at"],
            options,
            report,
            key="external_id",
        )
        label = layer.label
        said = None
        if options.from_gcj02:
            geoms = from_gcj02(geoms, src, label)
        else:
            said = declared_gcj02(layer.path, layer.frame)
            if said:
                metres = _typical_shift(geoms)
                report.warning(
                    label,
                    None,
                    "gcj02-suspected",
                    f"{said} says the positions are GCJ-02 (web-map coordinates), "
                    f"about {metres:.0f} m off WGS 84 here; pass --from-gcj02 to "
                    "convert them",
                )
        for col in ("external_id", "incident_type", "status", "title", "description"):
            attrs[col] = text_column(attrs[col]) if col in attrs else None
        if attrs["external_id"].notna().any():
            check_unique(attrs, "external_id", label, ids, report)
        sev_raw = text_column(attrs["severity"])
        sev = pd.to_numeric(sev_raw, errors="coerce")
        named = sev.isna() & sev_raw.notna()
        sev[named] = sev_raw[named].str.lower().map(SEVERITY_NAMES)
        bad = (sev.isna() | ~sev.between(1, 4)).to_numpy()
        report.add_many(
            label,
            ids[bad],
            "severity",
            ERROR,
            [f"severity {v!r} is not 1-4 or low/medium/high/critical" for v in sev_raw[bad]],
        )
        status = attrs["status"].fillna(FIRST_STATUS)
        bad = ~status.isin(INCIDENT_STATUSES).to_numpy()
        report.add_many(
            label,
            ids[bad],
            "status",
            ERROR,
            [f"status {v!r} is not one of {', '.join(INCIDENT_STATUSES)}" for v in status[bad]],
        )
        for col in ("incident_type", "title"):
            report.add_many(
                label, ids[attrs[col].isna().to_numpy()], f"{col}-missing", ERROR, f"no {col}"
            )
        when = pd.to_datetime(attrs["reported_at"], errors="coerce", utc=True, format="ISO8601")
        bad = when.isna().to_numpy()
        report.add_many(
            label,
            ids[bad],
            "reported-at",
            ERROR,
            [f"reported_at {v!r} is not an ISO 8601 time" for v in attrs["reported_at"][bad]],
        )
        mapped = set(
            resolve_columns(
                list(layer.frame.columns), "incidents", load_mapping(options.mapping)
            ).values()
        )
        rest = [c for c in layer.frame.columns if c not in mapped and c != "geometry"]
        extra = layer.frame[rest].astype(object).where(layer.frame[rest].notna(), None)
        frame = pd.DataFrame(
            {
                "attributes": extra.to_dict(orient="records") if rest else [{}] * len(attrs),
                "external_id": attrs["external_id"],
                "incident_type": attrs["incident_type"],
                "severity": sev.astype("Int64"),
                "status": status,
                "title": attrs["title"],
                "description": attrs["description"],
                "reported_at": when.map(lambda t: None if pd.isna(t) else t.isoformat()),
                "geom": bulk.geometry_hex(geoms),
            },
            index=attrs.index,
        )
        return Prepared(
            format=layer.path.suffix.lstrip("."),
            source_crs=src.to_string(),
            feature_count=len(frame),
            frames={Incident: frame},
            extra={
                "shapes": {Incident: geoms},
                # positions compared with the district's features when written
                "offset_check": None if options.from_gcj02 or said else (label, report),
            },
            bbox=bbox(geoms),
        )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        """Also warn when the positions sit a GCJ-02 offset away from the district's pipes,
        components and buildings and would sit on them as GCJ-02 (a web map's export that
        does not say so)."""
        check = prepared.extra.get("offset_check")
        if check:
            label, report = check
            note = gcj02_offset_from_features(conn, prepared.extra["shapes"][Incident])
            if note:
                report.warning(label, None, "gcj02-suspected", note)
        return super().write(conn, prepared, batch_id)


def _mentions(value: object) -> str | None:
    """The first text inside ``value`` (nested dicts and lists too) naming GCJ-02 or Amap."""
    if isinstance(value, str):
        return value if GCJ02_NAMES.search(value) else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for v in items:
        hit = _mentions(v)
        if hit:
            return hit
    return None


def declared_gcj02(path: Path, frame: pd.DataFrame) -> str | None:
    """Where the file says its positions are GCJ-02: a GeoJSON top-level member (``crs``,
    ``source`` ...) or a feature property such as ``coord_type`` or ``来源``; None if nowhere."""
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict):
            for key, value in doc.items():
                hit = None if key == "features" else _mentions(value)
                if hit:
                    return f"its {key!r} member ({hit!r})"
    for col in frame.columns:
        if col == frame.geometry.name or not SOURCE_PROPERTIES.search(str(col)):
            continue
        values = frame[col].dropna().astype(str)
        hits = values[values.str.contains(GCJ02_NAMES)]
        if len(hits):
            return f"property {col!r} ({hits.iloc[0]!r})"
    return None


def _typical_shift(geoms: np.ndarray) -> float:
    """How far GCJ-02 moves positions at the middle of these (storage CRS) points, metres."""
    xy = shapely.get_coordinates(np.asarray(geoms, dtype=object))
    if not len(xy):
        return float("nan")
    lon, lat = crs_mod.transformer(crs_mod.storage_srid(), 4326).transform(
        np.median(xy[:, 0]), np.median(xy[:, 1])
    )
    return float(gcj02.shift_metres(np.array([lon]), np.array([lat]))[0])


def from_gcj02(geoms: np.ndarray, src: CRS, label: str) -> np.ndarray:
    """Storage-CRS points whose source longitude/latitude were GCJ-02, moved to WGS 84."""
    if not src.is_geographic:
        raise UserError(
            f"{label}: --from-gcj02 converts longitude/latitude, but the file's "
            f"CRS is {crs_mod.crs_label(src)} (projected)"
        )
    name = crs_mod.crs_label(src) if src.to_epsg() else src.to_wkt()
    to_src = crs_mod.transformer(crs_mod.storage_srid(), name)
    back = crs_mod.transformer(name, crs_mod.storage_srid())

    def move(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_src.transform(xy[:, 0], xy[:, 1])
        lon, lat = gcj02.to_wgs84(np.asarray(lon), np.asarray(lat))
        x, y = back.transform(lon, lat)
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geoms, dtype=object), move)


def gcj02_offset_from_features(conn: psycopg.Connection, geoms: np.ndarray) -> str | None:
    """A warning when the points sit well away from the district's features and, moved back
    by the GCJ-02 offset, on them (None otherwise, or when there are no features)."""
    geoms = np.asarray(geoms, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)]
    if len(geoms) < 3:
        return None
    geoms = geoms[:: max(1, len(geoms) // OFFSET_CHECK_POINTS)]
    fixed = from_gcj02(geoms, CRS.from_epsg(4326), "")
    raw_xy, fixed_xy = shapely.get_coordinates(geoms), shapely.get_coordinates(fixed)
    srid = crs_mod.storage_srid()

    def nearest(point: str) -> sql.Composable:
        return sql.SQL("LEAST({})").format(
            sql.SQL(", ").join(
                sql.SQL("(SELECT {p} <-> f.{g} FROM {t} f ORDER BY {p} <-> f.{g} LIMIT 1)").format(
                    p=sql.SQL(point), g=sql.Identifier(col), t=bulk.qualified(model)
                )
                for model, col in NEARBY_FEATURES
            )
        )

    row = conn.execute(
        sql.SQL(
            "WITH p AS (SELECT ST_SetSRID(ST_MakePoint(x, y), {s}) AS raw, "
            "ST_SetSRID(ST_MakePoint(fx, fy), {s}) AS fixed "
            "FROM unnest(%s::float8[], %s::float8[], %s::float8[], %s::float8[]) t(x, y, fx, fy)),"
            " d AS (SELECT {r} AS raw, {f} AS fixed FROM p) "
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY raw), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY fixed) FROM d"
        ).format(s=sql.Literal(srid), r=nearest("p.raw"), f=nearest("p.fixed")),
        (
            raw_xy[:, 0].tolist(),
            raw_xy[:, 1].tolist(),
            fixed_xy[:, 0].tolist(),
            fixed_xy[:, 1].tolist(),
        ),
    ).fetchone()
    raw, near = row if row else (None, None)
    if raw is None or near is None:
        return None  # no features to compare with
    shift = _typical_shift(geoms)
    if not (raw >= OFFSET_MIN_M and near < OFFSET_GAIN * raw):
        return None
    return (
        f"the positions sit a median {raw:.0f} m from the nearest pipe, component or "
        f"building; moved back by the GCJ-02 offset here ({shift:.0f} m) they sit "
        f"{near:.0f} m from them: if they come from a web map (Amap/高德 ...), pass "
        "--from-gcj02"
    )
