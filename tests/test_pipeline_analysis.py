"""Pipeline analyses against expectations worked out independently: tiny hand-built networks
in a scratch database, walks over the raw sample tables, WNTR's valve segmentation of Net3,
and geometry recomputed with shapely or PostGIS in the test."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict, deque
from pathlib import Path

import networkx as nx
import numpy as np
import psycopg
import pytest
import shapely
import wntr

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import NotFoundError
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import
from cimtwin.settings import get_settings
from cimtwin.spatial.district_queries import volume_query
from cimtwin.spatial.pipelines import graph as graph_module
from cimtwin.spatial.pipelines.clearance import clearance_analysis
from cimtwin.spatial.pipelines.clearance_rules import (
    BUILDING,
    PipeSpec,
    clearance_rule,
    clearance_rules,
    gas_class,
)
from cimtwin.spatial.pipelines.graph import (
    NetworkGraph,
    clear_graph_cache,
    connected_components,
    network_graph,
)
from cimtwin.spatial.pipelines.graph_store import GraphStore
from cimtwin.spatial.pipelines.isolation import isolate, isolation_analysis
from cimtwin.spatial.pipelines.profile import profile_analysis
from cimtwin.spatial.pipelines.qa import dangling_ends, qa_analysis
from cimtwin.spatial.pipelines.sections import cross_section_analysis, excavation_analysis
from cimtwin.spatial.pipelines.trace import trace_analysis
from tests.pipeline_rows import network_batch

NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
NET3_OPTIONS = dict(crs="EPSG:4547", local_transform="500000,2500000,0,-695200", dataset="net3")
SCHEMA = "cim"
X0, Y0 = 520_000.0, 2_520_000.0  # the tiny networks, well away from the sample and Net3


def arun(url: str, fn):
    """Run ``fn(conn)`` on an async autocommit connection to ``url``."""

    async def main():
        async with await psycopg.AsyncConnection.connect(libpq_dsn(url), autocommit=True) as conn:
            return await fn(conn)

    return asyncio.run(main())


# --- building tiny networks by hand ---------------------------------------------------------------


def add_network(
    conn: psycopg.Connection,
    dataset: str,
    network: str,
    subtype: str,
    nodes: dict[str, tuple],
    pipes: dict[str, tuple],
) -> tuple[dict, dict]:
    """nodes: name -> (x, y, ground, feature, appurtenance); pipes: name -> (from, to,
    centre z at from, centre z at to, diameter mm, flow, depth_ref, extra columns).
    Returns (node ids, segment ids) by name."""
    nid, sid = {}, {}
    batch = network_batch(conn.execute, dataset)
    for name, (x, y, ground, feature, app) in nodes.items():
        nid[name] = conn.execute(
            f"INSERT INTO {SCHEMA}.pipeline_node (batch_id, dataset, point_no, network, subtype,"
            " feature, appurtenance, ground_elevation_m, valve_state, county_code, geom) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, '440309', "
            "ST_SetSRID(ST_MakePoint(%s, %s, %s), 4547)) RETURNING id",
            (
                batch,
                dataset,
                name,
                network,
                subtype,
                feature,
                app,
                ground,
                "open" if app and "阀" in app else None,
                X0 + x,
                Y0 + y,
                ground,
            ),
        ).fetchone()[0]
    for name, (a, b, za, zb, dia, flow, ref, extra) in pipes.items():
        xa, ya = nodes[a][:2]
        xb, yb = nodes[b][:2]
        h = dia / 2000.0
        shift = {"top": h, "invert": -h, "centre": 0.0}[ref]
        cols = {
            "batch_id": batch,
            "dataset": dataset,
            "network": network,
            "subtype": subtype,
            "from_node_id": nid[a],
            "to_node_id": nid[b],
            "diameter_mm": dia,
            "flow_direction": flow,
            "depth_ref": ref,
            "from_elevation_m": za + shift,
            "to_elevation_m": zb + shift,
            "from_depth_m": nodes[a][2] - za - shift,
            "to_depth_m": nodes[b][2] - zb - shift,
            "length_m": float(np.hypot(xb - xa, yb - ya)),
            "source_id": name,
            "county_code": "440309",
            **extra,
        }
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        sid[name] = conn.execute(
            f"INSERT INTO {SCHEMA}.pipeline_segment ({names}, geom) VALUES ({marks}, "
            "ST_SetSRID(ST_MakeLine(ST_MakePoint(%s, %s, %s), ST_MakePoint(%s, %s, %s)), 4547))"
            " RETURNING id",
            (*cols.values(), X0 + xa, Y0 + ya, za, X0 + xb, Y0 + yb, zb),
        ).fetchone()[0]
    return nid, sid


def pressure_pipe(a, b, dia=200.0, **extra):
    return (a, b, 98.8, 98.8, dia, 0, "top", extra)


#: tiny water network; V* are survey valve points, L1 (added below) a valve-layer valve on J1-E
#: next to J1.   A -V1- J1 -V2- J2 -V4- B,   J1 -V3- C - D - J2,   J1 - E (hydrant)
TINY_JS_NODES = {
    "A": (0, 0, 100.0, "直线点", None),
    "V1": (50, 0, 100.0, None, "阀门"),
    "J1": (100, 0, 100.0, "三通", None),
    "V2": (150, 0, 100.0, None, "阀门"),
    "J2": (200, 0, 100.0, "三通", None),
    "V4": (250, 0, 100.0, None, "阀门"),
    "B": (300, 0, 100.0, "预留口", None),
    "V3": (100, 50, 100.0, None, "阀门"),
    "C": (100, 100, 100.0, "弯头", None),
    "D": (200, 100, 100.0, "弯头", None),
    "E": (100, -60, 100.0, None, "消防栓"),
}
TINY_JS_PIPES = {
    "s1": pressure_pipe("A", "V1"),
    "s2": pressure_pipe("V1", "J1"),
    "s3": pressure_pipe("J1", "V2"),
    "s4": pressure_pipe("V2", "J2"),
    "s5": pressure_pipe("J2", "V4"),
    "s6": pressure_pipe("V4", "B"),
    "s7": pressure_pipe("J1", "V3"),
    "s8": pressure_pipe("V3", "C"),
    "s9": pressure_pipe("C", "D"),
    "s10": pressure_pipe("D", "J2"),
    "s11": pressure_pipe("J1", "E", 100.0),
}

#: tiny storm network (offset 1 km east): H1 -> M1 <- H2 (written M1->H2 with flow -1),
#: M1 -> M2 -> OUT; a flow loop X1 -> X2 -> X3 -> X1; Y1 -> Y2 flows into a dead end
TINY_PS_NODES = {
    "H1": (1000, 100, 100.0, None, "雨水井"),
    "H2": (1000, -100, 100.0, None, "雨水井"),
    "M1": (1100, 0, 100.0, "三通", "雨水井"),
    "M2": (1200, 0, 100.0, None, "雨水井"),
    "OUT": (1300, 0, 100.0, None, "出水口"),
    "X1": (1000, 300, 100.0, None, "雨水井"),
    "X2": (1100, 300, 100.0, None, "雨水井"),
    "X3": (1050, 400, 100.0, None, "雨水井"),
    "Y1": (1000, 600, 100.0, None, "雨水井"),
    "Y2": (1100, 600, 100.0, None, "雨水井"),
}


def gravity_pipe(a, b, inv_a, inv_b, flow=1, dia=400.0):
    """Inverts at the from and to ends -> centre elevations."""
    h = dia / 2000.0
    return (a, b, inv_a + h, inv_b + h, dia, flow, "invert", {})


TINY_PS_PIPES = {
    "P1": gravity_pipe("H1", "M1", 98.0, 97.7),
    "P2": gravity_pipe("M1", "H2", 97.7, 98.0, flow=-1),  # flows H2 -> M1
    "P3": gravity_pipe("M1", "M2", 97.6, 97.3),
    "P4": gravity_pipe("M2", "OUT", 97.3, 97.0, dia=600.0),
    "Q1": gravity_pipe("X1", "X2", 98.0, 97.5),
    "Q2": gravity_pipe("X2", "X3", 97.5, 97.6),  # rises with the flow
    "Q3": gravity_pipe("X3", "X1", 97.6, 98.0),  # rises too (a loop cannot only fall)
    "R1": gravity_pipe("Y1", "Y2", 98.0, 97.6),
}


@pytest.fixture(scope="module")
def scratch(scratch_database: str, tmp_path_factory) -> dict:
    """Net3 with a WNTR valve layer, the tiny networks and a planted clearance problem."""
    ids: dict = {"url": scratch_database}
    ids["net3"] = run_import(
        importer_for("pipelines"), [NET3], ImportOptions(**NET3_OPTIONS), scratch_database
    )
    wn = wntr.network.WaterNetworkModel(str(NET3))
    layer = wntr.network.layer.generate_valve_layer(wn, "strategic", 2, seed=123)
    csv_path = tmp_path_factory.mktemp("valves") / "net3_valves.csv"
    layer.to_csv(csv_path)
    ids["valves"] = run_import(
        importer_for("valves"), [csv_path], ImportOptions(dataset="net3"), scratch_database
    )
    ids["wn"], ids["layer"] = wn, layer
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        ids["js_nodes"], ids["js"] = add_network(
            conn, "tiny-js", "JS", "JP", TINY_JS_NODES, TINY_JS_PIPES
        )
        ids["L1"] = conn.execute(
            f"INSERT INTO {SCHEMA}.pipeline_valve (dataset, valve_no, network_batch_id, "
            "segment_id, node_id, county_code, geom) SELECT 'tiny-js', 'L1', s.batch_id, s.id, "
            "s.from_node_id, s.county_code, ST_LineInterpolatePoint("
            "s.geom, 0.1) FROM cim.pipeline_segment s WHERE s.id = %s RETURNING id",
            (ids["js"]["s11"],),
        ).fetchone()[0]
        ids["ps_nodes"], ids["ps"] = add_network(
            conn, "tiny-ps", "PS", "YS", TINY_PS_NODES, TINY_PS_PIPES
        )
        ids["planted"] = plant_clearance_problems(conn)
        ids["same_nodes"], ids["same"] = plant_same_network_pipes(conn)
        _, ids["culvert"] = add_network(
            conn,
            "tiny-culvert",
            "RL",
            "RS",
            {"U1": (CX, 0, 100.0, None, None), "U2": (CX + 100, 0, 100.0, None, None)},
            {
                "culvert": (
                    "U1",
                    "U2",
                    98.0,
                    98.0,
                    CULVERT_DIAMETER_MM,
                    0,
                    "centre",
                    {"width_mm": 1200.0, "height_mm": 1000.0},
                )
            },
        )
        conn.commit()
    return ids


GX = 2000.0  # the planted clearance problems, away from the other tiny networks
CX = 4000.0  # a pipe with both a diameter and a section (1200 x 1000), level at 98.0
CULVERT_DIAMETER_MM = 600.0


def plant_clearance_problems(conn: psycopg.Connection) -> dict[str, int]:
    """A gas pipe with a water pipe 0.20 m from it (walls) and a storm pipe crossing 0.10 m
    under it; a telecom duct 3 m away that the storm pipe crosses within the rules."""
    _, gas = add_network(
        conn,
        "tiny-rq",
        "RQ",
        "TR",
        {  # DN200 中压, centre 98.9
            "G1": (GX, 0, 100.0, None, None),
            "G2": (GX + 100, 0, 100.0, None, None),
        },
        {"gas": ("G1", "G2", 98.9, 98.9, 200.0, 0, "top", {"pressure_class": "中压"})},
    )
    _, water = add_network(
        conn,
        "tiny-planted",
        "JS",
        "JP",
        {  # DN100, centres 0.35 m apart
            "W1": (GX + 60, 0.35, 100.0, None, None),
            "W2": (GX + 90, 0.35, 100.0, None, None),
        },
        {"water": ("W1", "W2", 98.9, 98.9, 100.0, 0, "top", {})},
    )
    _, tx = add_network(
        conn,
        "tiny-tx",
        "TX",
        "XX",
        {"T1": (GX, -3, 100.0, None, None), "T2": (GX + 100, -3, 100.0, None, None)},
        {"tx": ("T1", "T2", 99.0, 99.0, 200.0, 0, "top", {"burial": "GK"})},
    )
    storm_centre = 98.9 - 0.1 - 0.10 - 0.15  # gas bottom - gap - storm radius
    _, storm = add_network(
        conn,
        "tiny-cross",
        "PS",
        "YS",
        {"K1": (GX + 50, 20, 100.0, None, "雨水井"), "K2": (GX + 50, -20, 100.0, None, "出水口")},
        {"storm": ("K1", "K2", storm_centre + 0.05, storm_centre - 0.05, 300.0, 1, "centre", {})},
    )  # level with storm_centre where it crosses the gas pipe
    return {**gas, **water, **tx, **storm}


SX = 6000.0  # water pipes of one network meeting each other, away from the rest
WATER_VERTICAL_M = 0.15  # GB 50289 table 4.1.14 row 给水管线 - 给水管线


def plant_same_network_pipes(conn: psycopg.Connection) -> tuple[dict, dict]:
    """A DN600 main (SS) M1 - T - M2 at centre 98.5; a DN200 branch (JP) joined to it at T on
    the same level; a DN200 distribution pipe (JP) crossing the main between T and M2 with
    0.10 m between the walls; two DN200 distribution pipes side by side 1.5 m apart."""
    main_half, pipe_half, gap = 0.3, 0.1, 0.10
    jp = {"subtype": "JP"}
    return add_network(
        conn,
        "tiny-same",
        "JS",
        "SS",
        {
            "M1": (SX, 0, 100.0, None, None),
            "T": (SX + 50, 0, 100.0, "三通", None),
            "M2": (SX + 100, 0, 100.0, None, None),
            "B": (SX + 50, 40, 100.0, None, None),
            "C1": (SX + 80, -20, 100.0, None, None),
            "C2": (SX + 80, 20, 100.0, None, None),
            "P1": (SX, 30, 100.0, None, None),
            "P2": (SX + 30, 30, 100.0, None, None),
            "Q1": (SX, 31.5, 100.0, None, None),
            "Q2": (SX + 30, 31.5, 100.0, None, None),
        },
        {
            "main1": ("M1", "T", 98.5, 98.5, 600.0, 0, "centre", {}),
            "main2": ("T", "M2", 98.5, 98.5, 600.0, 0, "centre", {}),
            "branch": ("T", "B", 98.5, 98.5, 200.0, 0, "centre", jp),
            "over": ("C1", "C2", *[98.5 + main_half + gap + pipe_half] * 2, 200.0, 0, "centre", jp),
            "side1": ("P1", "P2", 98.5, 98.5, 200.0, 0, "centre", jp),
            "side2": ("Q1", "Q2", 98.5, 98.5, 200.0, 0, "centre", jp),
        },
    )


def _same_network_check(scratch) -> dict:
    area = shapely.box(X0 + SX - 10, Y0 - 30, X0 + SX + 110, Y0 + 50)
    return arun(scratch["url"], lambda c: clearance_analysis(c, area=shapely.to_wkb(area)))


# --- pure functions -------------------------------------------------------------------------------


def test_connected_components_agree_with_networkx():
    rng = np.random.default_rng(7)
    for n, m in ((1, 0), (50, 30), (500, 480), (2000, 1500)):
        u, v = rng.integers(0, n, m), rng.integers(0, n, m)
        labels = connected_components(n, u, v)
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
        for comp in nx.connected_components(g):
            members = sorted(comp)
            assert set(labels[members].tolist()) == {members[0]}
    # a long chain numbered against the grain (the worst case for naive propagation)
    n = 10_001
    order = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)[::-1]])
    labels = connected_components(n, order[:-1], order[1:])
    assert (labels == 0).all()


def test_clearance_rows_expand_and_match_as_the_csv_says():
    rules = clearance_rules()
    sub_high = [
        r
        for r in rules
        if r.item_a == "给水管线" and r.item_b == "燃气" and r.variant.startswith("次高压")
    ]
    assert {(r.variant, r.value_m) for r in sub_high} == {("次高压B", 1.0), ("次高压A", 1.5)}
    assert not any(r.table == "4.1.7" for r in rules)  # crossing angles are not distances
    water = PipeSpec("JS", "JP", diameter_mm=300)
    small = PipeSpec("JS", "JP", diameter_mm=150)
    sewer = PipeSpec("PS", "WS", diameter_mm=400)
    m = clearance_rule("horizontal", water, sewer)
    assert (m.required_m, m.rule.row, m.rule.variant, m.rule.verified) == (1.5, 4, "d>200mm", True)
    assert clearance_rule("horizontal", sewer, small).required_m == 1.0
    gas = PipeSpec("RQ", "TR", diameter_mm=200, pressure_class="中压")
    cable = PipeSpec("DL", "GD", width_mm=800, height_mm=400, burial="GK")
    m = clearance_rule("horizontal", gas, cable)
    assert (m.required_m, m.rule.item_a, m.rule.unverified) == (1.0, "燃气(低/中压)", True)
    # '中压' without A/B: both drainage rows apply (1.2 each), and that is said
    m = clearance_rule("horizontal", sewer, gas)
    assert m.required_m == 1.2 and m.assumptions
    assert clearance_rule("horizontal", cable, PipeSpec("TX", "XX")) is None
    assert clearance_rule("vertical", cable, water) is None
    house = PipeSpec(BUILDING)
    assert clearance_rule("horizontal", house, sewer).required_m == 2.5
    assert gas_class("0.3MPa") == "中压A" and gas_class("次高压B") == "次高压B"
    assert gas_class("低压") == "低压" and gas_class("0.005") == "低压"


def test_dangling_ends_of_a_pressure_graph():
    segs = [(1, 1, 2, 10.0, 0, 100), (2, 2, 3, 10.0, 0, 100), (3, 2, 4, 10.0, 0, 100)]
    nodes = [
        (1, "直线点", None, None, "a", 0, 0),
        (2, "三通", None, None, "b", 10, 0),
        (3, None, "消防栓", None, "c", 20, 0),
        (4, "预留口", None, None, "d", 10, 10),
    ]
    g = NetworkGraph.from_rows("JS", segs, nodes)
    assert [(int(g.node_id[k]), why) for k, why in dangling_ends(g)] == [(1, "dead end")]


# --- the tiny networks ----------------------------------------------------------------------------


def _iso(scratch, burst: str, failed=()):
    return arun(
        scratch["url"],
        lambda c: isolation_analysis(
            c, segment_id=scratch["js"][burst], failed_valves=list(failed)
        ),
    )


def test_isolation_on_the_tiny_network(scratch):
    js, nd = scratch["js"], scratch["js_nodes"]
    r = _iso(scratch, "s2")
    assert set(r["isolated_segments"]["ids"]) == {js["s2"], js["s3"], js["s7"]}
    assert set(r["affected_nodes"]["ids"]) == {nd["J1"]}
    valves = {v["valve"]: v for v in r["valves"]}
    assert set(valves) == {
        f"node:{nd['V1']}",
        f"node:{nd['V2']}",
        f"node:{nd['V3']}",
        f"valve:{scratch['L1']}",
    }
    assert valves[f"node:{nd['V1']}"]["segment_ids"] == [js["s2"]]
    assert valves[f"valve:{scratch['L1']}"]["segment_ids"] == [js["s11"]]
    assert all(v["ring"] == 0 and v["action"] == "close" for v in r["valves"])
    length = sum(
        np.hypot(
            *np.subtract(
                TINY_JS_NODES[TINY_JS_PIPES[s][1]][:2], TINY_JS_NODES[TINY_JS_PIPES[s][0]][:2]
            )
        )
        for s in ("s2", "s3", "s7")
    )
    assert r["isolated_segments"]["length_m"] == pytest.approx(length)
    # the hydrant branch has its own valve segment
    r = _iso(scratch, "s11")
    assert r["isolated_segments"]["ids"] == [js["s11"]]
    assert [v["valve"] for v in r["valves"]] == [f"valve:{scratch['L1']}"]


def test_a_failed_valve_expands_to_the_next_ring(scratch):
    js, nd = scratch["js"], scratch["js_nodes"]
    r = _iso(scratch, "s2", [f"node:{nd['V3']}"])
    assert set(r["isolated_segments"]["ids"]) == {
        js[s] for s in ("s2", "s3", "s7", "s8", "s9", "s10", "s4", "s5")
    }
    assert set(r["affected_nodes"]["ids"]) == {nd[k] for k in ("J1", "V3", "C", "D", "J2")}
    rings = {v["valve"]: v["ring"] for v in r["valves"]}
    assert rings == {
        f"node:{nd['V1']}": 0,
        f"node:{nd['V2']}": 0,
        f"valve:{scratch['L1']}": 0,
        f"node:{nd['V4']}": 1,
    }
    v2 = next(v for v in r["valves"] if v["valve"] == f"node:{nd['V2']}")
    assert v2["segment_ids"] == sorted([js["s3"], js["s4"]])  # both sides are now inside
    assert r["failed_valves"] == {"used": [f"node:{nd['V3']}"], "not_on_boundary": []}
    assert r["rings"] == 1
    # failing the valve-layer valve brings in the hydrant; a far valve changes nothing
    r = _iso(scratch, "s2", [f"valve:{scratch['L1']}", f"node:{nd['V4']}"])
    assert set(r["isolated_segments"]["ids"]) == {js["s2"], js["s3"], js["s7"], js["s11"]}
    assert r["failed_valves"]["not_on_boundary"] == [f"node:{nd['V4']}"]
    with pytest.raises(NotFoundError, match="node:999999"):
        _iso(scratch, "s2", ["node:999999"])


def _trace(scratch, network="PS", **kw):
    return arun(scratch["url"], lambda c: trace_analysis(c, network=network, **kw))


def test_gravity_traces_follow_the_flow(scratch):
    ps, nd = scratch["ps"], scratch["ps_nodes"]
    up = _trace(scratch, segment_id=ps["P4"], direction="upstream")
    assert set(up["segment_ids"]) == {ps[k] for k in ("P4", "P3", "P1", "P2")}
    assert set(up["node_ids"]) == {nd[k] for k in ("M2", "M1", "H1", "H2")}
    assert up["totals"]["length_m"] == pytest.approx(100 + 100 + np.hypot(100, 100) * 2)
    down = _trace(scratch, segment_id=ps["P1"], direction="downstream")
    assert down["segment_ids"] == [ps["P1"], ps["P3"], ps["P4"]]
    # P2 is written M1 -> H2 with flow -1: downstream from H2 goes through it
    down = _trace(scratch, node_id=nd["H2"], direction="downstream")
    assert down["segment_ids"] == [ps["P2"], ps["P3"], ps["P4"]]
    # distance limit: the start pipe P3 is 100 m, so P1 and P2 start at 100 m and are cut
    near = _trace(scratch, segment_id=ps["P3"], direction="upstream", max_distance_m=150)
    assert set(near["segment_ids"]) == {ps["P3"], ps["P1"], ps["P2"]}
    assert near["totals"]["partial_segments"] == 2
    assert near["totals"]["length_m"] == pytest.approx(100 + 50 + 50)
    assert set(near["node_ids"]) == {nd["M1"]}
    stop = _trace(scratch, segment_id=ps["P1"], direction="downstream", stop_at_node_types=["三通"])
    assert stop["segment_ids"] == [ps["P1"]]
    assert stop["stops"] == [{"reason": "node type", "node_id": nd["M1"], "kind": "三通 雨水井"}]
    geo = {f["id"] for f in down["features"]}
    assert f"segment:{ps['P2']}" in geo and f"node:{nd['OUT']}" in geo


def test_pressure_trace_follows_connectivity_and_stops_at_valves(scratch):
    js, nd = scratch["js"], scratch["js_nodes"]
    r = _trace(scratch, "JS", segment_id=js["s2"], direction="upstream", stop_at_valves=True)
    assert r["direction_applied"] == "connected" and r["notes"]
    assert set(r["segment_ids"]) == {js["s2"], js["s3"], js["s7"]}
    assert set(r["node_ids"]) == {nd[k] for k in ("J1", "V1", "V2", "V3")}
    assert {s.get("valve") for s in r["stops"]} == {
        f"node:{nd['V1']}",
        f"node:{nd['V2']}",
        f"node:{nd['V3']}",
        f"valve:{scratch['L1']}",
    }
    r = _trace(scratch, "JS", segment_id=js["s2"], direction="connected")
    assert set(r["segment_ids"]) == set(js.values())


def test_qa_of_the_tiny_storm_network(scratch):
    ps, nd = scratch["ps"], scratch["ps_nodes"]
    report = arun(scratch["url"], lambda c: qa_analysis(c, "PS"))["networks"][0]
    # the tree, the loop, the dead end, and the planted crossing pipe (head -> outfall)
    assert report["gravity"] and report["subnetworks"]["count"] == 4
    assert sorted(report["subnetworks"]["sizes"]) == [1, 1, 3, 4]
    assert [(d["node_id"], d["reason"]) for d in report["dangling_ends"]["items"]] == [
        (nd["Y2"], "pipe flows into a dead end (no outfall)")
    ]
    loops = report["flow_loops"]["items"]
    assert len(loops) == 1
    assert set(loops[0]["node_ids"]) == {nd["X1"], nd["X2"], nd["X3"]}
    assert set(loops[0]["segment_ids"]) == {ps["Q1"], ps["Q2"], ps["Q3"]}
    slopes = {s["segment_id"]: s for s in report["reversed_slopes"]["items"]}
    assert set(slopes) == {ps["Q2"], ps["Q3"]}
    assert slopes[ps["Q2"]]["rise_m"] == pytest.approx(0.1)


def test_profiles_of_the_tiny_networks(scratch):
    ps, js = scratch["ps"], scratch["js"]
    p = arun(scratch["url"], lambda c: profile_analysis(c, ps["P1"]))
    assert [s["segment_id"] for s in p["segments"]] == [ps["P1"], ps["P3"], ps["P4"]]
    assert p["stopped"] == "outfall"
    assert p["segments"][2]["bottom_end_m"] == pytest.approx(97.0)  # P4's invert at OUT
    assert p["segments"][1]["chainage_start_m"] == pytest.approx(np.hypot(100, 100), abs=1e-3)
    assert [g["elevation_m"] for g in p["ground_line"]["points"]] == [100.0] * 4
    p = arun(scratch["url"], lambda c: profile_analysis(c, js["s1"]))
    assert [s["segment_id"] for s in p["segments"]] == [js[f"s{i}"] for i in range(1, 7)]
    assert [s["chainage_start_m"] for s in p["segments"]] == [0, 50, 100, 150, 200, 250]
    assert p["segments"][0]["cover_start_m"] == pytest.approx(1.1)  # ground 100, top 98.9
    back = arun(scratch["url"], lambda c: profile_analysis(c, js["s6"], reverse=True))
    assert [s["segment_id"] for s in back["segments"]] == [js[f"s{i}"] for i in range(6, 0, -1)]


def test_the_graph_cache_sees_new_rows(scratch):
    url = scratch["url"]
    with psycopg.connect(libpq_dsn(url)) as conn:
        _, pipes = add_network(
            conn,
            "tiny-cache",
            "RQ",
            "TR",
            {
                "N1": (5000, 0, 100.0, None, None),
                "N2": (5100, 0, 100.0, None, None),
                "N3": (5200, 0, 100.0, None, None),
            },
            {"a": pressure_pipe("N1", "N2"), "b": pressure_pipe("N2", "N3")},
        )
        conn.commit()

    async def graphs(conn):
        return await network_graph(conn, "RQ"), await network_graph(conn, "RQ")

    first, again = arun(url, graphs)
    assert first is again  # unchanged tables: the cached graph
    r = arun(url, lambda c: isolation_analysis(c, segment_id=pipes["a"]))
    assert set(r["isolated_segments"]["ids"]) == {pipes["a"], pipes["b"]} and not r["valves"]
    with psycopg.connect(libpq_dsn(url)) as conn:
        vid = conn.execute(
            f"INSERT INTO {SCHEMA}.pipeline_valve (dataset, valve_no, network_batch_id, "
            "segment_id, node_id, county_code, geom) SELECT 'tiny-cache', 'C1', s.batch_id, s.id, "
            "s.from_node_id, s.county_code, ST_StartPoint(s.geom) FROM "
            "cim.pipeline_segment s WHERE s.id = %s RETURNING id",
            (pipes["b"],),
        ).fetchone()[0]
        conn.commit()
    r = arun(url, lambda c: isolation_analysis(c, segment_id=pipes["a"]))
    assert r["isolated_segments"]["ids"] == [pipes["a"]]
    assert [v["valve"] for v in r["valves"]] == [f"valve:{vid}"]
    assert arun(url, lambda c: network_graph(c, "RQ")) is not first


@pytest.fixture
def share_graphs(monkeypatch):
    """``share_graphs(value)`` sets CIMTWIN_PIPELINE_GRAPH_DIR for the process's settings."""

    def share(value: str) -> None:
        monkeypatch.setenv("CIMTWIN_PIPELINE_GRAPH_DIR", value)
        get_settings.cache_clear()

    yield share
    monkeypatch.undo()
    get_settings.cache_clear()
    clear_graph_cache()


def _stored(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _same_isolation(a: NetworkGraph, b: NetworkGraph, seg: int) -> bool:
    x, y = isolate(a, seg), isolate(b, seg)
    return (
        np.array_equal(x.segments, y.segments)
        and np.array_equal(x.nodes, y.nodes)
        and x.valves == y.valves
        and x.rings == y.rings
    )


def test_workers_map_the_graph_one_of_them_built(scratch, tmp_path, monkeypatch, share_graphs):
    """The first worker builds the water graph and stores it; another one (an empty
    in-process cache) maps the stored arrays without reading the network tables, and every
    Net3 isolation and whole analysis answers as with a graph built privately."""
    url = scratch["url"]
    private = arun(url, lambda c: graph_module._load_graph(c, "JS"))
    seg_ids = private.seg_id.tolist()
    share_graphs("off")
    clear_graph_cache()
    answers_off = [
        arun(url, lambda c, i=i: isolation_analysis(c, segment_id=i, max_features=5))
        for i in seg_ids[::40]
    ]
    share_graphs(str(tmp_path))
    clear_graph_cache()
    first = arun(url, lambda c: network_graph(c, "JS"))
    assert len(_stored(tmp_path)) == 1
    clear_graph_cache()  # another worker

    async def no_tables(conn, network):
        raise AssertionError("the stored graph was not used")

    monkeypatch.setattr(graph_module, "_load_graph", no_tables)
    other = arun(url, lambda c: network_graph(c, "JS"))
    assert other is not first and not other.seg_id.flags.writeable  # mapped read-only
    assert np.array_equal(other.seg_id, private.seg_id)
    assert list(other.node_point_no) == list(private.node_point_no)
    assert list(other.valves) == list(private.valves)
    assert all(_same_isolation(private, other, s) for s in range(len(seg_ids)))
    answers_shared = [
        arun(url, lambda c, i=i: isolation_analysis(c, segment_id=i, max_features=5))
        for i in seg_ids[::40]
    ]
    assert answers_shared == answers_off
    # a build made 800 s ago by another worker has 100 s left here, not the full 900 s
    (folder,) = _stored(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "built_at": time.time() - 800}))
    clear_graph_cache()
    aged = arun(url, lambda c: network_graph(c, "JS"))
    assert aged.age_s == pytest.approx(800, abs=30)
    ((_, since, cached),) = graph_module.GRAPHS.entries.values()
    assert cached is aged and time.monotonic() - since == pytest.approx(800, abs=30)
    # a failed valve grows the isolation the same way on the mapped graph
    ref = private.valves[0].ref
    seg = private.valves[0].seg
    assert (
        isolate(other, seg, [ref]).segments.tolist()
        == isolate(private, seg, [ref]).segments.tolist()
    )


def test_a_stored_graph_gives_way_to_changed_tables(scratch, tmp_path, share_graphs):
    """A change of the network tables makes a new build, which replaces the older folder;
    a folder older than the graphs' maximum age is not used; 'off' stores nothing."""
    url = scratch["url"]
    share_graphs(str(tmp_path))
    clear_graph_cache()
    with psycopg.connect(libpq_dsn(url)) as conn:
        _, pipes = add_network(
            conn,
            "tiny-store",
            "RQ",
            "TR",
            {
                "N1": (7000, 0, 100.0, None, None),
                "N2": (7100, 0, 100.0, None, None),
                "N3": (7200, 0, 100.0, None, None),
            },
            {"a": pressure_pipe("N1", "N2"), "b": pressure_pipe("N2", "N3")},
        )
        conn.commit()
    r = arun(url, lambda c: isolation_analysis(c, segment_id=pipes["a"]))
    assert set(r["isolated_segments"]["ids"]) >= {pipes["a"], pipes["b"]}
    before = _stored(tmp_path)
    assert len(before) == 1
    with psycopg.connect(libpq_dsn(url)) as conn:
        vid = conn.execute(
            f"INSERT INTO {SCHEMA}.pipeline_valve (dataset, valve_no, network_batch_id, "
            "segment_id, node_id, county_code, geom) SELECT 'tiny-store', 'S1', s.batch_id, s.id, "
            "s.from_node_id, s.county_code, ST_StartPoint(s.geom) FROM "
            "cim.pipeline_segment s WHERE s.id = %s RETURNING id",
            (pipes["b"],),
        ).fetchone()[0]
        conn.commit()
    clear_graph_cache()  # a worker that has not seen the graph yet must not map the old one
    r = arun(url, lambda c: isolation_analysis(c, segment_id=pipes["a"]))
    assert r["isolated_segments"]["ids"] == [pipes["a"]]
    assert [v["valve"] for v in r["valves"]] == [f"valve:{vid}"]
    after = _stored(tmp_path)
    assert len(after) == 1 and after != before
    g = arun(url, lambda c: network_graph(c, "RQ"))
    assert g.seg_index(pipes["a"]) is not None
    key, fingerprint = _key_and_fingerprint(url, "RQ")
    store = GraphStore(tmp_path / "aged", max_age_s=900.0)
    dropped, other = tmp_path / "aged" / "g0dropped-0", tmp_path / "aged" / "g0other-0"
    dropped.mkdir(parents=True)
    other.mkdir()
    os.utime(dropped, (time.time() - 1000, time.time() - 1000))  # past the maximum age
    store.save(key, fingerprint, g)
    assert not dropped.exists() and other.exists()  # another database's recent build stays
    assert store.load(key, fingerprint) is not None
    assert store.load(key, (*fingerprint, "changed")) is None
    assert GraphStore(tmp_path / "aged", max_age_s=0.0).load(key, fingerprint) is None
    share_graphs("off")
    clear_graph_cache()
    stored = _stored(tmp_path)
    assert arun(url, lambda c: network_graph(c, "RQ")).seg_index(pipes["b"]) is not None
    assert _stored(tmp_path) == stored  # nothing written
    shared_by_all = tmp_path / "open"
    shared_by_all.mkdir()
    shared_by_all.chmod(0o777)  # anyone could plant a graph here: not used
    share_graphs(str(shared_by_all))
    clear_graph_cache()
    assert arun(url, lambda c: network_graph(c, "RQ")).seg_index(pipes["b"]) is not None
    assert _stored(shared_by_all) == []


def _key_and_fingerprint(url: str, network: str) -> tuple:
    async def get(conn):
        info = conn.info
        return (info.host, info.port, info.dbname, network), await graph_module.GRAPHS.fingerprint(
            conn
        )

    return arun(url, get)


# --- Net3 against WNTR ----------------------------------------------------------------------------


def test_valve_segments_equal_wntr_for_every_net3_pipe(scratch):
    wn, layer = scratch["wn"], scratch["layer"]
    assert scratch["valves"].counts == {"pipeline_valve": len(layer)}
    node_seg, link_seg, _ = wntr.metrics.topographic.valve_segments(wn.to_graph(), layer)

    async def check(conn):
        cur = await conn.execute(
            "SELECT id, source_id FROM cim.pipeline_segment WHERE dataset = 'net3'"
        )
        source = dict(await cur.fetchall())
        cur = await conn.execute(
            "SELECT id, point_no FROM cim.pipeline_node WHERE dataset = 'net3'"
        )
        point = dict(await cur.fetchall())
        by_link = {v: k for k, v in source.items()}
        g = await network_graph(conn, "JS")
        for pipe in wn.pipe_name_list:
            iso = isolate(g, g.seg_index(by_link[pipe]))
            got_links = {source[int(i)] for i in g.seg_id[iso.segments]}
            want = link_seg[pipe]
            assert got_links == set(link_seg.index[link_seg == want]), pipe
            got_nodes = {point[int(i)] for i in g.node_id[iso.nodes]}
            assert got_nodes == set(node_seg.index[node_seg == want]), pipe
        return len(wn.pipe_name_list)

    assert arun(scratch["url"], check) == 117


def test_valve_import_names_rows_with_unknown_ids(scratch, tmp_path):
    bad = tmp_path / "bad_valves.csv"
    bad.write_text(
        ",link,node\n0,10,10\n1,no-such-link,10\n2,10,no-such-node\n3,101,60\n", encoding="utf-8"
    )
    url = scratch["url"]
    with psycopg.connect(libpq_dsn(url)) as conn:
        before = conn.execute("SELECT count(*) FROM cim.pipeline_valve").fetchone()[0]
    with pytest.raises(ImportFailed) as exc:
        run_import(importer_for("valves"), [bad], ImportOptions(dataset="net3#bad"), url)
    problems = {(p.row, p.rule) for p in exc.value.report.errors}
    assert problems == {("3", "link-unknown"), ("4", "node-unknown"), ("5", "node-not-on-link")}
    assert "not an end of link 101" in str(exc.value.report.errors[-1].message)
    with psycopg.connect(libpq_dsn(url)) as conn:
        assert conn.execute("SELECT count(*) FROM cim.pipeline_valve").fetchone()[0] == before
    with pytest.raises(ImportFailed, match="no pipelines dataset 'nowhere'"):
        run_import(importer_for("valves"), [bad], ImportOptions(dataset="nowhere"), url)


# --- clearances -----------------------------------------------------------------------------------


def test_clearance_check_finds_the_planted_violations_and_nothing_else(scratch):
    ids = scratch["planted"]
    area = shapely.box(X0 + GX - 10, Y0 - 30, X0 + GX + 110, Y0 + 30)
    r = arun(scratch["url"], lambda c: clearance_analysis(c, area=shapely.to_wkb(area)))
    found = {(v["type"], v["a"]["segment_id"], v["b"]["segment_id"]): v for v in r["violations"]}
    gas, water, storm = ids["gas"], ids["water"], ids["storm"]
    assert set(found) == {
        ("horizontal", *sorted((gas, water))),
        ("vertical", *sorted((gas, storm))),
    }
    h = found[("horizontal", *sorted((gas, water)))]
    assert h["measured_m"] == pytest.approx(0.35 - 0.1 - 0.05, abs=1e-6)
    assert h["centre_distance_m"] == pytest.approx(0.35, abs=1e-6)
    assert h["required_m"] == 0.5 and h["rule"]["csv_row"] == 27
    assert h["rule"]["table"] == "4.1.9" and h["rule"]["unverified"] is True
    assert h["rule"]["status"].startswith("UNVERIFIED")
    v = found[("vertical", *sorted((gas, storm)))]
    assert v["measured_m"] == pytest.approx(0.10, abs=1e-6)
    assert v["required_m"] == 0.15 and v["rule"]["verified"] is True
    assert v["rule"]["table"] == "4.1.14" and v["rule"]["unverified"] is False
    # gas-water, gas-storm and storm-telecom (0.20 m under the duct; 0.15 m asked) were checked
    assert r["counts"] == {
        "violations": 2,
        "horizontal": 1,
        "vertical": 1,
        "by_rule_status": {"verified": 1, "unverified": 1},
        "pipe_pairs": 3,
        "pipe_building_pairs": 0,
    }
    assert r["no_rule"] == []
    # only the telecom network: its crossing and its neighbours are within the rules
    r = arun(scratch["url"], lambda c: clearance_analysis(c, networks=["TX"]))
    assert r["violations"] == [] and r["counts"]["pipe_pairs"] >= 1


def test_a_pipe_has_one_size_in_district_queries_and_in_analyses(scratch):
    """Diameter and section both given: the size is the diameter (the importer's rule), in a
    district volume query (pipe top and bottom) as in a cross section."""
    sid = scratch["culvert"]["culvert"]
    region = shapely.box(X0 + CX - 5, Y0 - 5, X0 + CX + 105, Y0 + 5)
    section = shapely.LineString([(X0 + CX + 50, Y0 - 5), (X0 + CX + 50, Y0 + 5)])

    async def both(conn):
        volume = await volume_query(
            conn, shapely.to_wkb(region), ["pipelines"], -1e4, 1e4, relative=False, limit=100
        )
        cut = await cross_section_analysis(
            conn, line=shapely.to_wkb(section), length_m=section.length
        )
        return volume["pipelines"]["rows"], cut["pipes"]

    volume_rows, section_pipes = arun(scratch["url"], both)
    (row,) = [r for r in volume_rows if r[0] == sid]
    (cut,) = [p for p in section_pipes if p["segment_id"] == sid]
    half = CULVERT_DIAMETER_MM / 2000.0
    assert cut["centre_elevation_m"] == pytest.approx(98.0, abs=1e-6)
    assert cut["top_elevation_m"] - cut["centre_elevation_m"] == pytest.approx(half, abs=1e-6)
    bottom, top = row[3], row[4]
    assert top - 98.0 == pytest.approx(half, abs=1e-6)
    assert 98.0 - bottom == pytest.approx(half, abs=1e-6)


def test_same_network_crossings_are_checked_and_joined_pipes_are_not(scratch):
    """A distribution pipe over a main of the same network is a crossing (issue 9, defect
    6); a branch joined to the main at a node is not, though it meets it on the same level."""
    same = scratch["same"]
    r = _same_network_check(scratch)
    found = {(v["type"], v["a"]["segment_id"], v["b"]["segment_id"]): v for v in r["violations"]}
    assert set(found) == {("vertical", *sorted((same["over"], same["main2"])))}
    v = found[("vertical", *sorted((same["over"], same["main2"])))]
    assert v["measured_m"] == pytest.approx(0.10, abs=1e-6)
    assert v["required_m"] == WATER_VERTICAL_M and v["rule"]["csv_row"] == 54
    assert {v["a"]["subtype"], v["b"]["subtype"]} == {"JP", "SS"}
    assert r["checked"] == [
        {"type": "vertical", "item_a": "给水管线", "item_b": "给水管线", "pairs": 1}
    ]
    joined = {same["branch"], same["main1"], same["main2"]}
    assert not any({v["a"]["segment_id"], v["b"]["segment_id"]} <= joined for v in r["violations"])


def test_same_network_pairs_without_a_rule_are_listed(scratch):
    """Two distribution pipes side by side: GB 50289 has no horizontal row for water next to
    water, so the pair is listed under no_rule, not passed over in silence."""
    r = _same_network_check(scratch)
    assert r["no_rule"] == [
        {
            "type": "horizontal",
            "item_a": "给水管线",
            "item_b": "给水管线",
            "pairs": 1,
            "note": "the shipped GB 50289 table has no row for this pair: not checked",
        }
    ]
    # one crossing and the side-by-side pair; nothing of the joined branch
    assert r["counts"]["pipe_pairs"] == 2


# --- on the sample --------------------------------------------------------------------------------


def _raw_network(conn: psycopg.Connection, network: str):
    segs = conn.execute(
        "SELECT id, from_node_id, to_node_id, flow_direction FROM "
        "cim.pipeline_segment WHERE network = %s",
        (network,),
    ).fetchall()
    valves = {
        r[0]
        for r in conn.execute(
            "SELECT id FROM cim.pipeline_node WHERE network = %s AND appurtenance LIKE '%%阀%%'",
            (network,),
        )
    }
    return segs, valves


def test_burst_on_a_sample_water_main_closes_the_valves_a_walk_finds(loaded_sample, database_url):
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        segs, valve_nodes = _raw_network(conn, "JS")
        burst = conn.execute(
            "SELECT s.id FROM cim.pipeline_segment s JOIN cim.pipeline_node n ON n.id = "
            "s.from_node_id WHERE s.subtype = 'JP' AND n.feature = '三通' ORDER BY s.id "
            "LIMIT 1"
        ).fetchone()[0]
    at_node = defaultdict(list)
    for sid, a, b, _ in segs:
        at_node[a].append(sid)
        at_node[b].append(sid)
    ends = {sid: (a, b) for sid, a, b, _ in segs}
    # walk pipes from the burst; a valve point is where the walk stops (and a valve closes)
    seen, closing, queue = {burst}, set(), deque([burst])
    while queue:
        for node in ends[queue.popleft()]:
            if node in valve_nodes:
                closing.add(node)
                continue
            for nxt in at_node[node]:
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
    r = arun(database_url, lambda c: isolation_analysis(c, segment_id=burst))
    assert set(r["isolated_segments"]["ids"]) == seen
    assert {v["id"] for v in r["valves"]} == closing and len(closing) >= 2
    assert all(v["kind"] == "valve_point" for v in r["valves"])
    # customers: each building's nearest service pipe, found without the index
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        nearest = conn.execute(
            "SELECT b.id, (SELECT s.id FROM cim.pipeline_segment s WHERE s.network = 'JS' AND "
            "s.subtype NOT IN ('SS', 'JY') ORDER BY ST_Distance(s.geom, b.footprint), s.id "
            "LIMIT 1), b.residents FROM cim.building b WHERE EXISTS (SELECT 1 FROM "
            "cim.pipeline_segment s WHERE s.network = 'JS' AND s.subtype NOT IN ('SS', 'JY') "
            "AND ST_DWithin(s.geom, b.footprint, 100))"
        ).fetchall()
    served = {b: res for b, s, res in nearest if s in seen}
    assert {b["building_id"] for b in r["customers"]["items"]} == set(served)
    assert r["customers"]["residents"] == sum(v or 0 for v in served.values())


def test_upstream_trace_on_a_storm_pipe_returns_exactly_what_flows_into_it(
    loaded_sample, database_url
):
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        start = conn.execute(
            "SELECT s.id FROM cim.pipeline_segment s JOIN cim.pipeline_node n ON n.id = "
            "CASE WHEN s.flow_direction = -1 THEN s.from_node_id ELSE s.to_node_id END "
            "WHERE s.subtype = 'YS' AND n.appurtenance = '出水口' "
            "ORDER BY coalesce(s.diameter_mm, s.height_mm) DESC, s.id LIMIT 1"
        ).fetchone()[0]
        segs, _ = _raw_network(conn, "PS")
    up = {sid: (b if f == -1 else a) for sid, a, b, f in segs}
    down = {sid: (a if f == -1 else b) for sid, a, b, f in segs}
    into = defaultdict(list)
    for sid, node in down.items():
        into[node].append(sid)
    # what flows into the start: walk against the flow
    want, queue = {start}, deque([start])
    while queue:
        for sid in into[up[queue.popleft()]]:
            if sid not in want:
                want.add(sid)
                queue.append(sid)
    r = arun(
        database_url,
        lambda c: trace_analysis(c, network="PS", segment_id=start, direction="upstream"),
    )
    got = set(r["segment_ids"])
    assert got == want and len(got) > 20
    # and from each of them the flow leads to the start
    out_of = defaultdict(list)
    for sid, node in up.items():
        out_of[node].append(sid)
    for sid in got:
        cur, steps = sid, 0
        while cur != start and steps < len(segs):
            nxt = [s for s in out_of[down[cur]] if s in got]
            assert nxt, f"segment {sid}: its flow leaves the traced set"
            cur, steps = nxt[0], steps + 1
        assert cur == start


def _pipe_top_depths(conn, area: shapely.Polygon, ids=None):
    """Shallowest top depth of every pipe meeting ``area``, by dense sampling with shapely."""
    rows = conn.execute(
        "SELECT s.id, ST_AsBinary(s.geom), coalesce(s.diameter_mm, s.height_mm, 0) / 2000, "
        "na.ground_elevation_m, nb.ground_elevation_m, s.network FROM cim.pipeline_segment s "
        "JOIN cim.pipeline_node na ON na.id = s.from_node_id JOIN cim.pipeline_node nb ON "
        "nb.id = s.to_node_id WHERE ST_Intersects(s.geom, ST_GeomFromWKB(%s, 4547))",
        (shapely.to_wkb(area),),
    ).fetchall()
    out = {}
    for sid, wkb, h, ga, gb, net in rows:
        line = shapely.from_wkb(bytes(wkb))
        coords = np.asarray(line.coords)
        f = np.linspace(0, 1, 2001)
        pts = shapely.line_interpolate_point(shapely.force_2d(line), f, normalized=True)
        inside = shapely.intersects(area, pts)
        d2 = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(coords[:, :2], axis=0).T))])
        z = np.interp(f * d2[-1], d2, coords[:, 2])
        depth = (ga + f * (gb - ga)) - (z + h)
        out[sid] = (float(depth[inside].min()), net)
    return out


def test_excavation_check_orders_gas_and_power_first_then_shallower(loaded_sample, database_url):
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        x, y = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM cim.pipeline_node WHERE "
            "network = 'RQ' AND feature = '四通' ORDER BY id LIMIT 1"
        ).fetchone()
        area = shapely.box(x - 25, y - 25, x + 25, y + 25)
        truth = _pipe_top_depths(conn, area)
    depth = 1.2
    r = arun(
        database_url, lambda c: excavation_analysis(c, area=shapely.to_wkb(area), depth_m=depth)
    )
    pipes = r["pipes"]
    got = {p["segment_id"] for p in pipes}
    assert {sid for sid, (d, _) in truth.items() if d < depth - 0.01} <= got
    assert all(truth[sid][0] < depth + 0.01 for sid in got)
    assert len(got) < len(truth)  # the deep drains are not reached
    for p in pipes:
        assert p["top_depth_m"] == pytest.approx(truth[p["segment_id"]][0], abs=0.01)
    keys = [(0 if p["network"] in ("RQ", "DL") else 1, p["top_depth_m"]) for p in pipes]
    assert keys == sorted(keys)
    assert {p["network"] for p in pipes} >= {"RQ", "JS"}
    assert pipes[0]["network"] in ("RQ", "DL")
    assert all(n["priority"] == (0 if n["network"] in ("RQ", "DL") else 1) for n in r["nodes"])


def test_cross_section_offsets_match_line_locate_point(loaded_sample, database_url):
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        # across the road of a straight water main: 60 m perpendicular through its middle
        sid, wkb = conn.execute(
            "SELECT id, ST_AsBinary(geom) FROM cim.pipeline_segment WHERE subtype = 'JP' AND "
            "length_m > 40 ORDER BY id LIMIT 1"
        ).fetchone()
        main = shapely.force_2d(shapely.from_wkb(bytes(wkb)))
        mid = main.interpolate(0.5, normalized=True)
        dx, dy = np.subtract(main.coords[-1], main.coords[0]) / main.length
        section = shapely.LineString(
            [(mid.x + 30 * dy, mid.y - 30 * dx), (mid.x - 30 * dy, mid.y + 30 * dx)]
        )
        expect = dict(
            conn.execute(
                "SELECT s.id, ST_LineLocatePoint(l.g, ST_Intersection(ST_Force2D(s.geom), l.g)) "
                "* ST_Length(l.g) FROM cim.pipeline_segment s, (SELECT ST_GeomFromWKB(%s, 4547) "
                "AS g) l WHERE ST_Intersects(s.geom, l.g)",
                (shapely.to_wkb(section),),
            ).fetchall()
        )
        zs = {
            r[0]: shapely.from_wkb(bytes(r[1]))
            for r in conn.execute(
                "SELECT id, ST_AsBinary(geom) FROM cim.pipeline_segment WHERE id = ANY(%s)",
                (list(expect),),
            )
        }
    r = arun(
        database_url,
        lambda c: cross_section_analysis(c, line=shapely.to_wkb(section), length_m=section.length),
    )
    got = {p["segment_id"]: p for p in r["pipes"]}
    assert set(got) == set(expect) and sid in got and len(got) >= 4
    offsets = [p["offset_m"] for p in r["pipes"]]
    assert offsets == sorted(offsets)
    for k, off in expect.items():
        assert got[k]["offset_m"] == pytest.approx(off, abs=1e-3)
        pipe = zs[k]
        cross = pipe.intersection(section)
        f = shapely.force_2d(pipe).project(shapely.force_2d(cross), normalized=True)
        coords = np.asarray(pipe.coords)
        d2 = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(coords[:, :2], axis=0).T))])
        z = float(np.interp(f * d2[-1], d2, coords[:, 2]))
        assert got[k]["centre_elevation_m"] == pytest.approx(z, abs=1e-3)
        assert (
            got[k]["top_elevation_m"] > got[k]["centre_elevation_m"] > got[k]["bottom_elevation_m"]
        )
        assert 0 < got[k]["depth_m"] < 8
    samples = r["ground"]["samples"]
    assert len(samples) == 31 and samples[-1]["offset_m"] == pytest.approx(section.length)
    assert all(60 < s["elevation_m"] < 90 for s in samples)


def test_analysis_statements_run_without_jit_in_one_round_trip_on_pooled_connections(scratch):
    """rows_nojit turns JIT off for its statement only on a plain connection; on the API's
    pooled connections (JIT off for the session already) it opens no transaction."""
    from cimtwin.api.db import make_pool
    from cimtwin.settings import Settings
    from cimtwin.spatial.sql_toolkit import rows_nojit

    url = scratch["url"]
    query = "SELECT current_setting('jit')"

    async def plain(conn):
        default = (await (await conn.execute(query)).fetchone())[0]
        inside = (await rows_nojit(conn, query))[0][0]
        return default, inside, (await (await conn.execute(query)).fetchone())[0]

    default, inside, after = arun(url, plain)
    assert inside == "off" and after == default  # SET LOCAL: the session keeps its setting

    async def pooled():
        pool = make_pool(Settings(database_url=url))
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:

                def no_transaction(*a, **k):
                    raise AssertionError("a transaction was opened")

                conn.transaction = no_transaction
                return (await rows_nojit(conn, query))[0][0]
        finally:
            await pool.close()

    assert asyncio.run(pooled()) == "off"
