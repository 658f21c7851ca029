"""Readers and checks that need no sample: encodings, headers, CRS mistakes, bad rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import CRS

from cimtwin.errors import UserError
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.pipelines import PipelinesImporter
from cimtwin.importers.report import Report
from cimtwin.importers.sources import (
    _clean,
    decode_text,
    line_numbers,
    load_mapping,
    read_tables,
    resolve_columns,
)
from cimtwin.spatial.crs import Similarity4, implausible_coordinates

POINTS = """物探点号,管线类别,管线小类,特征,附属物,X,Y,地面高程,井深,备注
JS1,JS,JP,三通,,2501564.000,502456.000,80.50,,
JS2,JS,JP,直线点,阀门,2501564.000,502500.000,80.40,,
JS3,JS,JP,直线点,,2501564.000,502560.000,80.20,,
YS1,PS,YS,,检修井,2501570.000,502456.000,80.50,2.0,
YS2,PS,YS,,检修井,2501570.000,502510.000,80.30,2.3,
"""
LINE_HEADER = (
    "起点点号,终点点号,管线类别,管线小类,起点埋深,终点埋深,管径,断面,材质,埋设方式,权属单位,"
    "建设年代,压力,流向,电压,电缆条数,总孔数,占用孔数,道路名称,状态\n"
)
LINES = LINE_HEADER + (
    "JS1,JS2,JS,JP,1.20,1.20,300,,球墨铸铁"
    ",直埋,水务集团,2015,0.4MPa,,,,,,致远中路,在用\n"
    "JS2,JS3,JS,JP,1.20,1.20,300,,球墨铸铁"
    ",直埋,水务集团,2015,0.4MPa,,,,,,致远中路,在用\n"
    "YS1,YS2,PS,YS,2.00,2.30,600,,混凝土"
    ",直埋,水务集团,2015,,1,,,,,致远中路,在用\n"
)


def write(tmp: Path, points: str = POINTS, lines: str = LINES, enc: str = "utf-8") -> list[Path]:
    p, q = tmp / "points.csv", tmp / "lines.csv"
    p.write_bytes(points.encode(enc))
    q.write_bytes(lines.encode(enc))
    return [p, q]


def prepare(paths: list[Path], **opts) -> tuple[Report, object]:
    report = Report()
    prepared = PipelinesImporter().prepare(paths, ImportOptions(crs="EPSG:4547", **opts), report)
    return report, prepared


def rules(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.rule, []).append(f"{p.file}:{p.row}")
    return out


def test_gbk_and_utf8_read_alike(tmp_path: Path) -> None:
    a = write(tmp_path / "u" if (tmp_path / "u").mkdir() is None else tmp_path)
    (tmp_path / "g").mkdir()
    b = write(tmp_path / "g", enc="gbk")
    assert decode_text(b[0])[1] == "gb18030"
    assert read_tables(a[0])[0].frame.equals(read_tables(b[0])[0].frame)


def test_clean_table_has_no_problems_and_3d_centre_lines(tmp_path: Path) -> None:
    report, prep = prepare(write(tmp_path))
    assert report.problems == []
    segs = next(iter(v for k, v in prep.frames.items() if k.__tablename__ == "pipeline_segment"))
    water = segs[segs["network"] == "JS"].iloc[0]
    storm = segs[segs["network"] == "PS"].iloc[0]
    assert water["depth_ref"] == "top" and water["from_elevation_m"] == pytest.approx(79.3)
    assert storm["depth_ref"] == "invert" and storm["to_elevation_m"] == pytest.approx(78.0)
    assert storm["flow_direction"] == 1


def test_survey_defects_are_each_reported_with_file_and_line(tmp_path: Path) -> None:
    points = POINTS + "JS3,JS,JP,直线点,,2501564.000,502600.000,80.10,,\n"  # line 7: dup
    points += "ZZ1,ZZ,,,,2501564.000,502650.000,80.10,,\n"  # line 8: unknown network
    lines = LINES
    lines += "JS3,JS9,JS,JP,1.2,1.2,300,,球墨铸铁,直埋,,,,,,,,,,\n"  # line 5: unknown end
    lines += "JS1,JS1,JS,JP,1.2,1.2,300,,球墨铸铁,直埋,,,,,,,,,,\n"  # line 6: loop
    lines += "JS2,JS1,JS,JP,1.2,1.2,300,,球墨铸铁,直埋,,,,,,,,,,\n"  # line 7: reversed dup
    lines += "YS2,YS1,PS,YS,2.3,2.0,600,,混凝土,直埋,,,,1,,,,,,\n"  # line 8: uphill + dup
    lines += "JS1,JS2,JS,JP,1.2,25,300,,金子,直埋,,,,,,,,,,\n"  # line 9: depth, material
    report, _ = prepare(write(tmp_path, points, lines))
    found = rules(report)
    assert found["duplicate-point-no"] == ["points.csv:4", "points.csv:7"]
    assert found["network-unknown"] == ["points.csv:8"]
    assert (
        found["line-end-unknown"] == ["lines.csv:5"] or "lines.csv:5" in found["line-end-unknown"]
    )
    assert found["line-self-loop"] == ["lines.csv:6"]
    assert "lines.csv:7" in found["duplicate-segment"]
    assert found["gravity-uphill"] == ["lines.csv:8"]
    assert found["depth-range"] == ["lines.csv:9"]
    assert found["material-unknown"] == ["lines.csv:9"]
    assert report.failed(strict=False)


def test_tables_need_a_crs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="carry no CRS"):
        PipelinesImporter().prepare(write(tmp_path), ImportOptions(), Report())


def test_swapped_axes_and_lonlat_are_caught(tmp_path: Path) -> None:
    swapped = POINTS.replace("2501564.000,502456.000", "502456.000,2501564.000")
    report, _ = prepare(write(tmp_path, swapped))
    assert rules(report)["crs-axes-swapped"] == ["points.csv:2"]
    x = np.array([114.02, 502456.0])
    y = np.array([22.61, 2501564.0])
    found = implausible_coordinates(x, y, CRS.from_epsg(4547))
    assert [r for r, m, _ in found] == ["crs-lonlat-in-projected"]
    assert found[0][1].tolist() == [True, False]


def test_english_headers_through_a_mapping_file(tmp_path: Path) -> None:
    header_p = "pt,net,sub,feat,att,N,E,GL,WD,rem"
    header_l = "s,e,net,sub,sd,ed,dia,sec,mat,bur,own,yr,pr,fl,v,cc,ht,hu,rd,st"
    points = header_p + POINTS[POINTS.index("\n") :]
    lines = header_l + LINES[LINES.index("\n") :]
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "pipeline_points: {point_no: [pt], network: [net], subtype: [sub], feature: [feat],\n"
        "  appurtenance: [att], x: [N], y: [E], ground_elevation: [GL], well_depth: [WD]}\n"
        "pipeline_lines: {from_point: [s], to_point: [e], network: [net], subtype: [sub],\n"
        "  from_depth: [sd], to_depth: [ed], diameter: [dia], section: [sec], material: [mat],\n"
        "  burial: [bur], owner: [own], flow: [fl], status: [st]}\n",
        encoding="utf-8",
    )
    report, prep = prepare(write(tmp_path, points, lines), mapping=mapping)
    assert report.problems == []
    assert prep.feature_count == 8
    assert resolve_columns(["物探点号(编号)"], "pipeline_points", load_mapping(None)) == {
        "point_no": "物探点号(编号)"
    }


def test_unknown_headers_say_which_were_found(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(UserError, match="headers: a, b, c"):
        PipelinesImporter().prepare([bad, bad], ImportOptions(crs="EPSG:4547"), Report())


def test_local_grid_similarity_round_numbers() -> None:
    sim = Similarity4(dx=1000.0, dy=-500.0, rotation_arcsec=3600.0 * 90, scale_ppm=0.0)
    x, y = sim.apply(np.array([10.0]), np.array([0.0]))
    assert x[0] == pytest.approx(1000.0) and y[0] == pytest.approx(-490.0)


@pytest.mark.parametrize(
    "text",
    [
        # a quoted comma and a quoted line break, blanks, a blank row
        '点号,特征,备注\nJS1,三通,"阀, 井"\nJS2, 弯头 ,\n,,\nJS3,"多\n行",x\n',
        "a,b\n1,2\n3,4",  # no final newline
        "a,b,c\n1,2\n",  # a short row: pandas' leniency
        "a,a\n1,2\n",  # duplicate headers: pandas renames
        'a,b\n1, "x, y"\n',  # a space before a quote: pandas' skipinitialspace
        "点号 , 特征\r\nJS1,\u3000三通\u3000\r\nJS2,\t\r\n",  # CRLF, padded header, wide spaces
        "点号,特征\nJS1,\u3000三通\nJS2,弯头\u3000\n",  # a column padded with wide spaces only
    ],
)
def test_arrow_and_pandas_csv_readers_give_the_same_table(tmp_path: Path, text: str) -> None:
    """Survey tables go through Arrow's CSV parser when they are plain, else pandas'; the
    rows the importers see must not depend on which."""
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    got = read_tables(path)[0].frame
    want = _clean(
        pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    )
    assert list(got.columns) == list(want.columns)
    assert (
        got.astype(object).fillna("").values.tolist()
        == want.astype(object).fillna("").values.tolist()
    )


def test_a_utf8_table_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: it must not stick to the first header."""
    text = "物探点号,X,Y\nJS1,2501560.0,502600.0\n"
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(text, encoding="utf-8-sig")
    a, b = read_tables(plain)[0], read_tables(marked)[0]
    assert list(b.frame.columns) == ["物探点号", "X", "Y"]
    assert a.frame.equals(b.frame) and a.encoding == b.encoding == "utf-8"


def test_a_broken_workbook_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "survey.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(UserError, match=r"survey\.xlsx: not a readable XLSX workbook"):
        read_tables(path)


def test_workbook_numbers_read_as_the_sheet_shows_them(tmp_path: Path) -> None:
    """Excel keeps every number as a float: whole ones (point numbers, years, sizes) come out
    as integers, fractions as they are; blank rows are dropped, line numbers stay Excel's."""
    import openpyxl

    path = tmp_path / "survey.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["管线点成果表"])  # a title row above the header
    ws.append(["物探点号", "X", "Y", "建设年代"])
    ws.append([1234567, 2501564.125, 502600, 2015])
    ws.append([None, None, None, None])
    ws.append(["JS2", 2501570.5, 502610.25, None])
    wb.save(path)
    table = read_tables(path)[0]
    assert table.label == "survey.xlsx[Sheet]"
    rows = table.frame.astype(object).values.tolist()
    assert rows == [
        ["1234567", "2501564.125", "502600", "2015"],
        ["JS2", "2501570.5", "502610.25", ""],
    ]
    assert list(line_numbers(table.frame.index)) == [3, 5]


def test_a_sheet_off_a1_read_in_batches_keeps_excel_s_lines(tmp_path: Path, monkeypatch) -> None:
    """A sheet whose cells start at C4, below empty rows, read two rows at a time: the same
    rows and Excel's line numbers, short rows padded, one column per header."""
    import openpyxl

    from cimtwin.importers import sources

    monkeypatch.setattr(sources, "SHEET_BATCH_ROWS", 2)
    path = tmp_path / "survey.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["C2"] = "管线点成果表"
    for col, head in zip("CDE", ["物探点号", "X", "Y"], strict=True):
        ws[f"{col}4"] = head
    rows = {5: ["JS1", 1.0, 2.5], 6: ["JS2", 3, None], 8: ["JS3", 5, 6], 9: ["JS4", 7, 8]}
    for line, values in rows.items():
        for col, v in zip("CDE", values, strict=True):
            ws[f"{col}{line}"] = v
    ws["C11"] = "JS5"  # a short row: only its point number
    wb.save(path)
    frame = read_tables(path)[0].frame
    assert list(frame.columns) == ["物探点号", "X", "Y"]
    assert frame.astype(object).values.tolist() == [
        ["JS1", "1", "2.5"],
        ["JS2", "3", ""],
        ["JS3", "5", "6"],
        ["JS4", "7", "8"],
        ["JS5", "", ""],
    ]
    assert list(line_numbers(frame.index)) == [5, 6, 8, 9, 11]


@pytest.mark.parametrize("gbk", [False, True])
def test_a_blank_row_does_not_move_the_line_numbers_after_it(tmp_path: Path, gbk: bool) -> None:
    """Rows of empty cells (an export's spacer) are dropped; the rows after keep the line a
    surveyor sees in Excel or an editor (UTF-8 goes through Arrow, GBK through decoding)."""
    path = tmp_path / "points.csv"
    text = "物探点号,X,Y\nJS1,1,2\n,,\nJS2,3,4\n"
    path.write_bytes(text.encode("gbk" if gbk else "utf-8"))
    frame = read_tables(path)[0].frame
    assert frame["物探点号"].tolist() == ["JS1", "JS2"]
    assert list(line_numbers(frame.index)) == [2, 4]


def test_a_survey_in_several_tables_names_each_row_by_its_own_file(tmp_path: Path) -> None:
    """Point and line tables split in two: each defect is reported in the file it is in, and
    the stored nodes and pipes are those of the survey in one table each."""
    head, *rows = POINTS.splitlines(keepends=True)
    lhead, *lrows = LINES.splitlines(keepends=True)
    # a second pipe at the through-point JS2 of another material: a shared-point warning
    lrows[1] = lrows[1].replace("球墨铸铁", "PE")
    (tmp_path / "one").mkdir()
    whole = write(tmp_path / "one", head + "".join(rows), lhead + "".join(lrows))
    parts = []
    for name, text in (
        ("points_a.csv", head + "".join(rows[:2])),
        ("points_b.csv", head + "".join(rows[2:]) + "ZZ1,ZZ,,,,2501564.0,502650.0,80.1,,\n"),
        ("lines_a.csv", lhead + lrows[0]),
        ("lines_b.csv", lhead + "".join(lrows[1:]) + lrows[2].replace("600", "六百")),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        parts.append(tmp_path / name)
    report, prepared = prepare(parts)
    found = rules(report)
    assert found["network-unknown"] == ["points_b.csv:5"]
    assert found["not-a-number"] == ["lines_b.csv:4"]
    assert found["duplicate-segment"] == ["lines_b.csv:4"]
    # on the pipe the whole table names too (its first pipe, JS1-JS2)
    assert found["shared-point-attributes"] == ["lines_a.csv:2"]
    one_report, one = prepare(whole)
    assert rules(one_report)["shared-point-attributes"] == ["lines.csv:2"]
    for model, frame in one.frames.items():
        split = prepared.frames[model].reset_index(drop=True)
        pd.testing.assert_frame_equal(split.iloc[: len(frame)], frame.reset_index(drop=True))


def test_the_source_lines_are_let_go_before_the_shared_point_check(
    tmp_path: Path, monkeypatch
) -> None:
    """The peak of a district's import was the source text, the checked pipes and the
    shared-point check's arrays at once: the source frame is gone when the check runs."""
    import gc
    import weakref

    from cimtwin.importers import pipelines

    seen: dict[str, object] = {}
    check_lines, shared = pipelines.check_lines, pipelines.shared_point_consistency

    def lines_checked(ln, *args, **kwargs):
        seen["source"] = weakref.ref(ln)
        seen["columns"] = len(ln.columns)
        out = check_lines(ln, *args, **kwargs)
        seen["left"] = list(ln.columns)
        return out

    def shared_checked(seg, nodes, report):
        gc.collect()
        seen["alive_at_check"] = seen["source"]() is not None
        return shared(seg, nodes, report)

    monkeypatch.setattr(pipelines, "check_lines", lines_checked)
    monkeypatch.setattr(pipelines, "shared_point_consistency", shared_checked)
    report, _ = prepare(write(tmp_path))
    assert report.problems == [] and seen["alive_at_check"] is False
    # what check_lines consumed: the checked text columns, not the ends, files and rows
    assert set(seen["left"]) == {"from_point", "to_point", "_file", "_row"}
    assert seen["columns"] > len(seen["left"]) + 15
