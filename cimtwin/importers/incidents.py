"""Incidents from GeoJSON (or any point layer): type, severity, status and time validated."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import bbox, check_unique, single_layer
from cimtwin.importers.report import ERROR, Report
from cimtwin.importers.sources import load_mapping, resolve_columns, text_column
from cimtwin.spatial import bulk
from cimtwin.spatial.incident import INCIDENT_STATUSES, Incident

SEVERITY_NAMES = {"low": 1, "medium": 2, "high": 3, "critical": 4,
                  "一般": 1, "较大": 2, "重大": 3, "特别重大": 4}


class IncidentsImporter(CopyWriter):
    kind = "incidents"
    models = (Incident,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        layer, attrs, geoms, src, ids = single_layer(
            paths, "incidents", ("Point",), ["incident_type", "severity", "title",
                                             "reported_at"], options, report, key="external_id")
        label = layer.label
        for col in ("external_id", "incident_type", "status", "title", "description"):
            attrs[col] = text_column(attrs[col]) if col in attrs else None
        if attrs["external_id"].notna().any():
            check_unique(attrs, "external_id", label, ids, report)
        sev_raw = text_column(attrs["severity"])
        sev = pd.to_numeric(sev_raw, errors="coerce")
        named = sev.isna() & sev_raw.notna()
        sev[named] = sev_raw[named].str.lower().map(SEVERITY_NAMES)
        bad = (sev.isna() | ~sev.between(1, 4)).to_numpy()
        report.add_many(label, ids[bad], "severity", ERROR,
                        [f"severity {v!r} is not 1-4 or low/medium/high/critical"
                         for v in sev_raw[bad]])
        status = attrs["status"].fillna("reported")
        bad = ~status.isin(INCIDENT_STATUSES).to_numpy()
        report.add_many(label, ids[bad], "status", ERROR,
                        [f"status {v!r} is not one of {', '.join(INCIDENT_STATUSES)}"
                         for v in status[bad]])
        for col in ("incident_type", "title"):
            report.add_many(label, ids[attrs[col].isna().to_numpy()], f"{col}-missing", ERROR,
                            f"no {col}")
        when = pd.to_datetime(attrs["reported_at"], errors="coerce", utc=True, format="ISO8601")
        bad = when.isna().to_numpy()
        report.add_many(label, ids[bad], "reported-at", ERROR,
                        [f"reported_at {v!r} is not an ISO 8601 time" for v in
                         attrs["reported_at"][bad]])
        mapped = set(resolve_columns(list(layer.frame.columns), "incidents",
                                     load_mapping(options.mapping)).values())
        rest = [c for c in layer.frame.columns if c not in mapped and c != "geometry"]
        extra = layer.frame[rest].astype(object).where(layer.frame[rest].notna(), None)
        frame = pd.DataFrame({
            "attributes": extra.to_dict(orient="records") if rest else [{}] * len(attrs),
            "external_id": attrs["external_id"], "incident_type": attrs["incident_type"],
            "severity": sev.astype("Int64"), "status": status, "title": attrs["title"],
            "description": attrs["description"],
            "reported_at": when.map(lambda t: None if pd.isna(t) else t.isoformat()),
            "geom": bulk.geometry_hex(geoms)}, index=attrs.index)
        return Prepared(
            format=layer.path.suffix.lstrip("."), source_crs=src.to_string(),
            feature_count=len(frame), frames={Incident: frame},
            extra={"shapes": {Incident: geoms}}, bbox=bbox(geoms))
