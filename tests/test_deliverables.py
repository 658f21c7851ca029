"""Surveyors' deliveries as they arrive: titled workbooks, Shapefiles without .cpg, tables of
one network, pinyin headers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyogrio
import pytest
from openpyxl import Workbook

from cimtwin.errors import UserError
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.components import ComponentsImporter
from cimtwin.importers.pipelines import PipelinesImporter
from cimtwin.importers.report import Report
from cimtwin.importers.sources import load_mapping, read_layer, resolve_columns
from tests.conftest import SAMPLE
from tests.test_import_sources import LINES, POINTS, rules, write


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _titled_workbook(path: Path, points: str = POINTS, lines: str = LINES) -> Path:
    """Points and lines in two sheets, each under a title row and a blank row."""
    wb = Workbook()
    for ws, title, text in (
        (wb.active, "管线点成果表", points),
        (wb.create_sheet(), "管线段成果表", lines),
    ):
        ws.title = title
        ws.append([f"深圳市龙华区北站片区{title}（2024年）"])
        ws.append([])
        for row in _rows(text):
            ws.append(row)
    wb.save(path)
    return path


def test_xlsx_with_a_title_row_above_the_header_loads(tmp_path: Path) -> None:
    book = _titled_workbook(tmp_path / "survey.xlsx")
    report = Report()
    prep = PipelinesImporter().prepare([book], ImportOptions(crs="EPSG:4547"), report)
    assert report.problems == []
    assert prep.feature_count == 5 + 3


def test_rows_of_a_titled_sheet_are_reported_by_their_excel_line(tmp_path: Path) -> None:
    """Header on line 3 (title, blank, header): the first data row is line 4."""
    points = POINTS + "ZZ1,ZZ,,,,2501564.000,502650.000,80.10,,\n"  # 6th point: line 9
    book = _titled_workbook(tmp_path / "survey.xlsx", points)
    report = Report()
    PipelinesImporter().prepare([book], ImportOptions(crs="EPSG:4547"), report)
    assert rules(report)["network-unknown"] == ["survey.xlsx[管线点成果表]:9"]


def _shapefile_without_cpg(tmp: Path, encoding: str) -> Path:
    frame = pyogrio.read_dataframe(SAMPLE / "shp" / "component.shp").iloc[:40]
    path = tmp / f"component_{encoding.replace('-', '').lower()}.shp"
    pyogrio.write_dataframe(frame, path, encoding=encoding)
    path.with_suffix(".cpg").unlink()
    return path


@pytest.mark.parametrize("encoding", ["GBK", "UTF-8"])
def test_shapefile_without_cpg_is_read_in_its_encoding_and_says_which(
    tmp_path: Path,
    encoding: str,
) -> None:
    """No .cpg: GDAL reads the DBF as ISO-8859-1 (GBK names became garbage, then a pyarrow
    traceback). The encoding is detected, used, and named in the report."""
    path = _shapefile_without_cpg(tmp_path, encoding)
    layer = read_layer(path)
    want = pyogrio.read_dataframe(SAMPLE / "shp" / "component.shp").iloc[:40]
    assert layer.frame["name"].tolist() == want["name"].tolist()
    report = Report()
    prep = ComponentsImporter().prepare([path], ImportOptions(dry_run=True), report)
    assert prep.feature_count == 40
    notes = [p for p in report.problems if p.rule == "text-encoding-guessed"]
    assert len(notes) == 1 and encoding in notes[0].message, report.problems
    assert report.errors == []


def test_dbf_language_driver_byte_names_the_code_page(tmp_path: Path) -> None:
    """Byte 29 of the DBF header = 0x4D (code page 936): GBK without trying."""
    path = _shapefile_without_cpg(tmp_path, "GBK")
    dbf = path.with_suffix(".dbf")
    raw = bytearray(dbf.read_bytes())
    raw[29] = 0x4D
    dbf.write_bytes(bytes(raw))
    layer = read_layer(path)
    assert "0x4D" in layer.encoding_note and "GBK" in layer.encoding_note
    assert layer.frame["name"].iloc[0] == "金龙大道上水井盖(JS0079)"


def test_tables_of_one_network_without_network_column_name_the_option(tmp_path: Path) -> None:
    """No 管线类别 column: one error naming --network, not one 'network ''' per row."""

    def drop_network(text: str) -> str:
        rows = _rows(text)
        i = rows[0].index("管线类别")
        return "".join(",".join(r[:i] + r[i + 1 :]) + "\n" for r in rows)

    water_p = "\n".join(ln for ln in POINTS.splitlines() if not ln.startswith("YS")) + "\n"
    water_l = "\n".join(ln for ln in LINES.splitlines() if not ln.startswith("YS")) + "\n"
    paths = write(tmp_path, drop_network(water_p), drop_network(water_l))
    with pytest.raises(UserError, match="--network") as info:
        PipelinesImporter().prepare(paths, ImportOptions(crs="EPSG:4547"), Report())
    assert "points.csv" in str(info.value) and str(info.value).count("--network") == 1
    report = Report()
    prep = PipelinesImporter().prepare(paths, ImportOptions(crs="EPSG:4547", network="js"), report)
    assert report.problems == [] and prep.feature_count == 3 + 2


@pytest.mark.parametrize(
    "section, headers, want",
    [
        (
            "components",
            ["BJBM", "BJXLDM", "BJMC", "ZGBM", "QSDW", "YHDW", "BJZT"],
            [
                "component_id",
                "class_code",
                "name",
                "dept_authority",
                "dept_owner",
                "dept_maintainer",
                "status",
            ],
        ),
        (
            "work_grid",
            ["WGBM", "WGMC", "SQDM", "WGY"],
            ["code", "name", "community_code", "officer"],
        ),
        (
            "parcels",
            ["DKBH", "YDXZ", "RJL", "XG"],
            ["parcel_code", "land_use", "planned_plot_ratio", "height_limit_m"],
        ),
        (
            "buildings",
            ["JZBM", "JZMC", "JZGD", "CS"],
            ["building_code", "name", "height_m", "floors"],
        ),
        (
            "pipeline_points",
            ["WTDH", "GXLB", "GXXL", "TZ", "FSW", "DMGC"],
            ["point_no", "network", "subtype", "feature", "appurtenance", "ground_elevation"],
        ),
        (
            "pipeline_lines",
            ["QDDH", "ZDDH", "QDMS", "ZDMS", "GJ", "CZ", "MSFS", "QSDW"],
            [
                "from_point",
                "to_point",
                "from_depth",
                "to_depth",
                "diameter",
                "material",
                "burial",
                "owner",
            ],
        ),
    ],
)
def test_pinyin_abbreviations_are_default_aliases(
    section: str, headers: list[str], want: list[str]
) -> None:
    found = resolve_columns([h.lower() for h in headers], section, load_mapping(None))
    assert [found.get(f) for f in want] == [h.lower() for h in headers]


def test_one_burial_depth_column_serves_both_ends() -> None:
    found = resolve_columns(["QDDH", "ZDDH", "MS"], "pipeline_lines", load_mapping(None))
    assert found["from_depth"] == found["to_depth"] == "MS"
    found = resolve_columns(["QDMS", "ZDMS", "MS"], "pipeline_lines", load_mapping(None))
    assert (found["from_depth"], found["to_depth"]) == ("QDMS", "ZDMS")


def test_pipeline_tables_with_pinyin_headers_load(tmp_path: Path) -> None:
    pinyin = {
        "物探点号": "WTDH",
        "管线类别": "GXLB",
        "管线小类": "GXXL",
        "起点点号": "QDDH",
        "终点点号": "ZDDH",
        "起点埋深": "QDMS",
        "终点埋深": "ZDMS",
        "管径": "GJ",
        "材质": "CZ",
        "地面高程": "DMGC",
    }

    def rename(text: str) -> str:
        head, _, rest = text.partition("\n")
        return ",".join(pinyin.get(h, h) for h in head.split(",")) + "\n" + rest

    report = Report()
    prep = PipelinesImporter().prepare(
        write(tmp_path, rename(POINTS), rename(LINES)), ImportOptions(crs="EPSG:4547"), report
    )
    assert report.problems == [] and prep.feature_count == 8
