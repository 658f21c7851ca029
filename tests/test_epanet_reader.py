"""EPANET .inp reader: WNTR's example networks as the reference, plus hand-written edge cases.

No database: the reader only turns a file into canonical survey tables.
"""

from __future__ import annotations

import importlib.resources
import math
import re
from pathlib import Path

import pytest

from cimtwin.errors import UserError
from cimtwin.importers.epanet import LINE_COLUMNS, POINT_COLUMNS, EpanetNetwork, read_inp

WNTR_NETWORKS = ["Net3.inp", "Net1.inp", "Net2.inp", "Net6.inp", "ky4.inp", "ky10.inp"]


def wntr_network(name: str) -> Path:
    pytest.importorskip("wntr")
    path = Path(str(importlib.resources.files("wntr") / "library" / "networks" / name))
    if not path.is_file():
        pytest.skip(f"WNTR does not ship {name}")
    return path


@pytest.fixture(scope="module", params=WNTR_NETWORKS)
def pair(request: pytest.FixtureRequest) -> tuple[EpanetNetwork, object]:
    """Our reading and WNTR's reading of the same library network."""
    path = wntr_network(request.param)
    import wntr

    return read_inp(path), wntr.network.WaterNetworkModel(str(path))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# -- against WNTR ------------------------------------------------------------------------------


def test_counts_match_wntr(pair) -> None:
    net, wn = pair
    assert len(net.points) == wn.num_nodes
    assert len(net.lines) == wn.num_links
    nodes = net.points.set_index("point_no")["node_type"]
    links = net.lines.set_index("link_id")["link_type"]
    assert sorted(nodes.index[nodes == "junction"]) == sorted(wn.junction_name_list)
    assert sorted(nodes.index[nodes == "reservoir"]) == sorted(wn.reservoir_name_list)
    assert sorted(nodes.index[nodes == "tank"]) == sorted(wn.tank_name_list)
    assert sorted(links.index[links == "pipe"]) == sorted(wn.pipe_name_list)
    assert sorted(links.index[links == "pump"]) == sorted(wn.pump_name_list)
    assert sorted(links.index[links == "valve"]) == sorted(wn.valve_name_list)
    assert (wn.num_junctions, wn.num_reservoirs, wn.num_tanks) == (
        (nodes == "junction").sum(),
        (nodes == "reservoir").sum(),
        (nodes == "tank").sum(),
    )
    assert (wn.num_pipes, wn.num_pumps, wn.num_valves) == (
        (links == "pipe").sum(),
        (links == "pump").sum(),
        (links == "valve").sum(),
    )


def test_link_ends_sizes_and_vertices_match_wntr(pair) -> None:
    net, wn = pair
    assert net.us_units == (
        wn.options.hydraulic.inpfile_units in {"CFS", "GPM", "MGD", "IMGD", "AFD"}
    )
    assert net.flow_units == wn.options.hydraulic.inpfile_units
    for row in net.lines.itertuples(index=False):
        link = wn.get_link(row.link_id)
        assert (row.from_point, row.to_point) == (link.start_node_name, link.end_node_name)
        assert row.vertices == [tuple(v) for v in link.vertices], row.link_id
        if row.link_type == "pipe":
            assert close(row.length_m, link.length), row.link_id
            assert close(row.diameter, link.diameter * 1000), row.link_id
            assert close(row.minor_loss, link.minor_loss), row.link_id
            if wn.options.hydraulic.headloss == "H-W":  # unitless C: no conversion either side
                assert close(row.roughness, link.roughness), row.link_id
            assert (row.status == "CV") == link.check_valve, row.link_id
        elif row.link_type == "valve":
            assert close(row.diameter, link.diameter * 1000), row.link_id
            assert row.valve_type == link.valve_type
            assert math.isnan(row.length_m)
        else:
            assert math.isnan(row.diameter) and math.isnan(row.length_m)
        if row.status is not None and row.status != "CV":
            assert row.status == str(link.initial_status), row.link_id


def test_node_elevations_and_coordinates_match_wntr(pair) -> None:
    net, wn = pair
    for row in net.points.itertuples(index=False):
        node = wn.get_node(row.point_no)
        if row.node_type == "reservoir":
            assert close(row.ground_elevation, node.base_head), row.point_no
        else:
            assert close(row.ground_elevation, node.elevation), row.point_no
        if node.coordinates is None:
            assert math.isnan(row.x) and math.isnan(row.y)
        else:
            assert (row.x, row.y) == tuple(node.coordinates), row.point_no


def test_net3_details() -> None:
    net = read_inp(wntr_network("Net3.inp"))
    assert net.title.splitlines()[0] == "EPANET Example Network 3"
    assert (net.flow_units, net.us_units) == ("GPM", True)
    assert list(net.points.columns) == POINT_COLUMNS
    assert list(net.lines.columns) == LINE_COLUMNS
    river = net.points.set_index("point_no").loc["River"]
    assert (river.feature, river.appurtenance, river.node_type) == ("水源", "水源", "reservoir")
    assert river.ground_elevation == pytest.approx(220.0 * 0.3048)
    assert river.line_no == 106
    pump = net.lines.set_index("link_id").loc["10"]
    assert (pump.from_point, pump.to_point, pump.status) == ("Lake", "10", "Closed")  # [STATUS]
    assert pump.line_no == 237
    pipe = net.lines.set_index("link_id").loc["60"]
    assert pipe.diameter == pytest.approx(24 * 25.4)
    assert pipe.length_m == pytest.approx(1231 * 0.3048)
    assert (pipe.from_depth, pipe.to_depth, pipe.flow) == (1.2, 1.2, None)
    assert set(net.points["network"]) == {"JS"} and set(net.lines["subtype"]) == {"JP"}


# -- a small hand-written SI network -----------------------------------------------------------

SMALL = """\
[TITLE]
Small SI network ; a comment in the title
second line of the title

[OPTIONS]
 Units            LPS
 Headloss         H-W

[COORDINATES]   ; before the nodes it places
;Node   X          Y
 J1     500100.5   3000200.25
 J2     500200     3000200.25
 R1     500000     3000200
 T1     500300     3000300

[JUNCTIONS]
;ID   Elev   Demand  Pattern
 J1   12.5   1.0     ; mid-line comment
 J2   13.0
 J3   -1.5   0.5     ; has no coordinates

[RESERVOIRS]
 R1   45.0

[TANKS]
 T1   30.0   3   1   6   12   0

[pipes]    ; section names are case-insensitive
 P1   R1   J1   120.5   300   130   0.2   Open
 P2   J1   J2   100     200   120   0     CV
 P3   J2   J3   80      150   110   Closed   ; a status in place of the minor loss
 P4   J3   J1   60      100   100

[PUMPS]
 PU1  J2   T1   HEAD C1

[VALVES]
 V1   J1   J3   150   prv   30   0.5

[STATUS]
 PU1  Closed
 V1   45.0

[CURVES]
 C1   10   50

[VERTICES]
 P1   500050   3000210
 P1   500080   3000205.5
 V1   500150   3000100

[MYSECTION]
 whatever a newer EPANET writes here is ignored

[END]
 J9   1.0   this is after [END]
"""


def write(tmp_path: Path, text: str, name: str = "small.inp", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based line number of the (only) line containing ``fragment``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


def test_small_si_network_exact_values(tmp_path: Path) -> None:
    net = read_inp(write(tmp_path, SMALL), network="JS", default_depth_m=1.5)
    assert net.title == "Small SI network\nsecond line of the title"
    assert (net.flow_units, net.us_units) == ("LPS", False)

    points = net.points
    assert list(points.columns) == POINT_COLUMNS
    assert list(points["point_no"]) == ["J1", "J2", "J3", "R1", "T1"]
    assert list(points["node_type"]) == ["junction"] * 3 + ["reservoir", "tank"]
    assert list(points["feature"]) == ["节点"] * 3 + ["水源", "水池"]
    assert list(points["appurtenance"]) == [None, None, None, "水源", "水池"]
    assert list(points["ground_elevation"]) == [12.5, 13.0, -1.5, 45.0, 30.0]
    assert points["well_depth"].isna().all()
    assert set(points["network"]) == {"JS"} and set(points["subtype"]) == {"JP"}
    by_id = points.set_index("point_no")
    assert (by_id.loc["J1", "x"], by_id.loc["J1", "y"]) == (500100.5, 3000200.25)
    assert (by_id.loc["T1", "x"], by_id.loc["T1", "y"]) == (500300.0, 3000300.0)
    assert math.isnan(by_id.loc["J3", "x"]) and math.isnan(by_id.loc["J3", "y"])
    assert by_id.loc["J3", "line_no"] == line_of(SMALL, " J3   -1.5")
    assert by_id.loc["T1", "line_no"] == line_of(SMALL, " T1   30.0")

    lines = net.lines
    assert list(lines.columns) == LINE_COLUMNS
    assert list(lines["link_id"]) == ["P1", "P2", "P3", "P4", "PU1", "V1"]
    assert list(lines["link_type"]) == ["pipe"] * 4 + ["pump", "valve"]
    rows = {r.link_id: r for r in lines.itertuples(index=False)}

    p1 = rows["P1"]
    assert (p1.from_point, p1.to_point) == ("R1", "J1")
    assert (p1.diameter, p1.length_m, p1.roughness, p1.minor_loss) == (300.0, 120.5, 130.0, 0.2)
    assert (p1.status, p1.valve_type) == ("Open", None)
    assert p1.vertices == [(500050.0, 3000210.0), (500080.0, 3000205.5)]
    assert (p1.from_depth, p1.to_depth, p1.flow) == (1.5, 1.5, None)
    assert p1.line_no == line_of(SMALL, " P1   R1")

    assert rows["P2"].status == "CV" and rows["P2"].vertices == []
    p3 = rows["P3"]
    assert (p3.minor_loss, p3.status, p3.roughness) == (0.0, "Closed", 110.0)
    p4 = rows["P4"]
    assert (p4.minor_loss, p4.status) == (0.0, None)

    pump = rows["PU1"]
    assert (pump.from_point, pump.to_point, pump.status) == ("J2", "T1", "Closed")
    assert all(math.isnan(v) for v in (pump.diameter, pump.length_m, pump.roughness))
    assert pump.valve_type is None

    valve = rows["V1"]
    assert (valve.from_point, valve.to_point) == ("J1", "J3")
    assert (valve.diameter, valve.minor_loss, valve.valve_type) == (150.0, 0.5, "PRV")
    assert math.isnan(valve.length_m) and math.isnan(valve.roughness)
    assert valve.status is None  # a numeric [STATUS] setting is not a status
    assert valve.vertices == [(500150.0, 3000100.0)]


def test_us_units_convert_to_metres_and_millimetres(tmp_path: Path) -> None:
    text = SMALL.replace("Units            LPS", "Units            gpm")
    net = read_inp(write(tmp_path, text), network="XF")
    assert (net.flow_units, net.us_units) == ("GPM", True)
    by_id = net.points.set_index("point_no")
    assert by_id.loc["J1", "ground_elevation"] == pytest.approx(12.5 * 0.3048)
    assert by_id.loc["R1", "ground_elevation"] == pytest.approx(45.0 * 0.3048)
    assert by_id.loc["J1", "x"] == 500100.5  # coordinates stay in the file's own units
    p1 = net.lines.set_index("link_id").loc["P1"]
    assert p1.length_m == pytest.approx(120.5 * 0.3048)
    assert p1.diameter == pytest.approx(300 * 25.4)
    assert p1.roughness == 130.0
    assert set(net.lines["network"]) == {"XF"}


def test_default_units_are_gpm(tmp_path: Path) -> None:
    net = read_inp(write(tmp_path, SMALL.replace(" Units            LPS\n", "")))
    assert (net.flow_units, net.us_units) == ("GPM", True)


def test_latin1_and_utf8_ids(tmp_path: Path) -> None:
    latin = SMALL.replace("J3", "Jé")
    net = read_inp(write(tmp_path, latin, "latin.inp", encoding="latin-1"))
    assert "Jé" in set(net.points["point_no"])
    chinese = SMALL.replace("J3", "节点3")
    net = read_inp(write(tmp_path, chinese, "utf8.inp"))
    assert "节点3" in set(net.points["point_no"])
    assert ("J2", "节点3") in set(zip(net.lines["from_point"], net.lines["to_point"], strict=True))


def test_quoted_ids(tmp_path: Path) -> None:
    text = SMALL.replace(" J3 ", ' "J 3" ').replace("J3\n", '"J 3"\n')
    net = read_inp(write(tmp_path, text))
    assert "J 3" in set(net.points["point_no"])
    rows = net.lines.set_index("link_id")
    assert rows.loc["P3", "to_point"] == rows.loc["P4", "from_point"] == "J 3"
    assert rows.loc["V1", "to_point"] == "J 3"


# -- errors ------------------------------------------------------------------------------------


def expect_error(path: Path, line: int | None, *words: str) -> str:
    with pytest.raises(UserError) as caught:
        read_inp(path)
    message = str(caught.value)
    assert "\n" not in message
    prefix = path.name if line is None else f"{path.name}:{line}:"
    assert message.startswith(prefix), message
    if line is None:
        assert not re.match(re.escape(path.name) + r":\d", message), message
    for word in words:
        assert word in message, message
    return message


def test_link_to_undefined_node(tmp_path: Path) -> None:
    text = SMALL.replace(" P4   J3   J1", " P4   J3   99")
    message = expect_error(write(tmp_path, text, "Net.inp"), line_of(text, " P4   J3"))
    assert message.endswith("pipe P4 ends at node 99, which is not defined")


def test_pump_to_undefined_node(tmp_path: Path) -> None:
    text = SMALL.replace(" PU1  J2   T1", " PU1  J2   T9")
    expect_error(write(tmp_path, text), line_of(text, " PU1  J2"), "pump PU1", "T9")


def test_duplicate_node_id(tmp_path: Path) -> None:
    text = SMALL.replace(" T1   30.0", " J2   30.0")
    message = expect_error(write(tmp_path, text), line_of(text, " J2   30.0"), "node J2")
    assert f"line {line_of(text, ' J2   13.0')}" in message  # where it was first defined


def test_duplicate_link_id(tmp_path: Path) -> None:
    text = SMALL.replace(" V1   J1   J3", " P2   J1   J3")
    expect_error(write(tmp_path, text), line_of(text, " P2   J1   J3"), "link P2", "already")


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (" J2   13.0", " J2   13,0", ("junction J2 elevation", "'13,0'")),
        (" R1   45.0", " R1   high", ("reservoir R1 head",)),
        ("120.5   300   130", "120.5   3OO   130", ("pipe P1 diameter",)),
        ("0.2   Open", "0.2x  Open", ("pipe P1 minor loss",)),
        (" J2     500200", " J2     5e2e", ("node J2 x coordinate",)),
        ("500080   3000205.5", "500080   nan", ("link P1 vertex y", "finite")),
        ("150   prv   30   0.5", "150mm   prv   30   0.5", ("valve V1 diameter",)),
    ],
)
def test_bad_number(tmp_path: Path, old: str, new: str, words: tuple[str, ...]) -> None:
    text = SMALL.replace(old, new)
    assert text != SMALL
    expect_error(write(tmp_path, text), line_of(text, new), *words)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (" P4   J3   J1   60      100   100", " P4   J3   J1   60      100"),
        (" J2   13.0", " J2"),
        (" PU1  J2   T1   HEAD C1", " PU1  J2   T1"),
        (" J2     500200     3000200.25", " J2     500200"),
    ],
)
def test_too_few_fields(tmp_path: Path, old: str, new: str) -> None:
    text = SMALL.replace(old, new)
    assert text != SMALL
    number = [i for i, line in enumerate(text.splitlines(), 1) if line.rstrip() == new][0]
    expect_error(write(tmp_path, text), number, "field")


def test_unknown_valve_type_and_units(tmp_path: Path) -> None:
    text = SMALL.replace("prv", "XYZ")
    expect_error(write(tmp_path, text), line_of(text, "XYZ"), "valve V1", "XYZ")
    text = SMALL.replace("Units            LPS", "Units            GALLONS")
    expect_error(write(tmp_path, text), line_of(text, "GALLONS"), "GALLONS")


def test_references_to_undefined_ids(tmp_path: Path) -> None:
    text = SMALL.replace(" T1     500300", " T7     500300")
    expect_error(write(tmp_path, text), line_of(text, " T7"), "coordinates", "T7")
    text = SMALL.replace(" V1   500150", " V7   500150")
    expect_error(write(tmp_path, text), line_of(text, " V7"), "vertex", "V7")
    text = SMALL.replace(" PU1  Closed", " PU7  Closed")
    expect_error(write(tmp_path, text), line_of(text, " PU7"), "status", "PU7")


def test_missing_sections(tmp_path: Path) -> None:
    text = "[TITLE]\nnot a network\n\n[OPTIONS]\n Units LPS\n"
    expect_error(write(tmp_path, text, "empty.inp"), None, "[JUNCTIONS]", "[PIPES]")
    expect_error(write(tmp_path, "", "blank.inp"), None, "[JUNCTIONS]")
    expect_error(write(tmp_path, "[JUNCTIONS]\n[PIPES]\n", "hollow.inp"), None, "no nodes")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.inp"):
        read_inp(tmp_path / "missing.inp")


def test_nodes_without_links(tmp_path: Path) -> None:
    net = read_inp(write(tmp_path, "[JUNCTIONS]\n A  1\n B  2\n[PIPES]\n"))
    assert list(net.points["point_no"]) == ["A", "B"]
    assert net.lines.empty and list(net.lines.columns) == LINE_COLUMNS
