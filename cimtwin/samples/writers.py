"""Deterministic file writers: the same data always gives the same bytes.

Formats that stamp the current time are pinned: GeoPackage (``gpkg_contents.last_change``,
via GDAL's ``OGR_CURRENT_DATE``), DBF headers (write date in bytes 1-3) and XLSX (core
properties and zip entry times, rewritten with a fixed date and a stable entry order).
Floats are formatted with fixed decimals; rows are written in the order given.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import openpyxl
import pyogrio

from cimtwin.samples.spec import FIXED_DATE_TUPLE, FIXED_ISO_DATE

Formats = dict[int, str]  # column index -> printf-style float format


def _cell(v: object, fmt: str | None) -> str:
    if v is None:
        return ""
    if fmt is not None and isinstance(v, float | int):
        return fmt % v
    return str(v)


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Sequence],
    formats: Formats,
    encoding: str = "utf-8",
) -> None:
    """CSV with ``\\n`` line endings, no BOM, fixed decimals for the columns in ``formats``."""
    fmts = [formats.get(k) for k in range(len(header))]
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows([_cell(v, f) for v, f in zip(r, fmts, strict=True)] for r in rows)


def write_xlsx(path: Path, sheets: Sequence[tuple[str, Sequence[str], Sequence[Sequence]]]) -> None:
    """Workbook with one sheet per (title, header, rows); typed cells, reproducible bytes."""
    wb = openpyxl.Workbook(write_only=True)
    fixed = datetime(*FIXED_DATE_TUPLE)
    wb.properties.created = fixed
    wb.properties.modified = fixed
    wb.properties.creator = "cimtwin"
    for title, header, rows in sheets:
        ws = wb.create_sheet(title)
        ws.append(list(header))
        for r in rows:
            ws.append(list(r))
    buf = io.BytesIO()
    wb.save(buf)
    _rezip(buf, path)


def _rezip(buf: io.BytesIO, path: Path) -> None:
    """Rewrite an OOXML zip with fixed entry times, fixed core dates and sorted entries."""
    stamp = FIXED_ISO_DATE.replace(".000", "")
    with zipfile.ZipFile(buf) as zin:
        names = sorted(zin.namelist(), key=lambda n: (n != "[Content_Types].xml", n))
        with zipfile.ZipFile(path, "w") as zout:
            for name in names:
                data = zin.read(name)
                if name == "docProps/core.xml":
                    for tag in (b"created", b"modified"):
                        data = re.sub(
                            rb"(<dcterms:" + tag + rb"[^>]*>)[^<]*(</dcterms:" + tag + rb">)",
                            rb"\g<1>" + stamp.encode() + rb"\g<2>",
                            data,
                        )
                info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TUPLE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                zout.writestr(info, data, compresslevel=6)


@contextmanager
def fixed_gdal_date() -> Iterator[None]:
    """Make GDAL stamp a fixed date instead of the clock while writing."""
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_ISO_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def write_gpkg(path: Path, layers: Sequence[tuple[str, gpd.GeoDataFrame]]) -> None:
    """A GeoPackage with the given layers, in order."""
    if path.exists():
        path.unlink()
    with fixed_gdal_date():
        for name, gdf in layers:
            pyogrio.write_dataframe(gdf, path, layer=name, driver="GPKG")


def write_shp(path: Path, gdf: gpd.GeoDataFrame) -> list[Path]:
    """A UTF-8 Shapefile (.cpg written, .prj only if the frame has a CRS), DBF date pinned."""
    for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        path.with_suffix(ext).unlink(missing_ok=True)
    with fixed_gdal_date(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # intended: no .prj
        pyogrio.write_dataframe(
            gdf, path, driver="ESRI Shapefile", layer_options={"ENCODING": "UTF-8", "RESIZE": "YES"}
        )
    dbf = path.with_suffix(".dbf")
    with open(dbf, "r+b") as fh:
        fh.seek(1)
        fh.write(bytes([FIXED_DATE_TUPLE[0] - 1900, FIXED_DATE_TUPLE[1], FIXED_DATE_TUPLE[2]]))
    return [
        p
        for p in (path.with_suffix(e) for e in (".shp", ".shx", ".dbf", ".prj", ".cpg"))
        if p.exists()
    ]


def write_geojson(path: Path, features: Sequence[dict]) -> None:
    """RFC 7946 FeatureCollection (no crs member: CRS84), one feature per line."""
    lines = ['{"type":"FeatureCollection","features":[']
    for k, f in enumerate(features):
        sep = "," if k < len(features) - 1 else ""
        lines.append(json.dumps(f, ensure_ascii=False, separators=(",", ":")) + sep)
    lines.append("]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def write_json(path: Path, obj: object) -> None:
    """Pretty JSON with sorted keys and a trailing newline."""
    path.write_text(
        json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
        newline="\n",
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
