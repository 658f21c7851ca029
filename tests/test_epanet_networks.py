"""WNTR's own EPANET networks import as they ship (twin mains, pumps and valves whose two nodes
share a position), with WNTR's node and link counts, pipe lengths equal to their vertex
polylines, and valve isolation through the HTTP API equal to WNTR's valve segments
(issue 9, defects 1 and 2). Each network is imported once for the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
import wntr
from fastapi.testclient import TestClient

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import

WNTR = Path(wntr.__file__).parent
FT = 0.3048
#: network -> (file, --local-transform putting it into EPSG:4547's area, feet -> metres when
#: the coordinates are in feet; each network in its own corner of the storage CRS)
NETWORKS = {
    "ky4": (WNTR / "library" / "networks" / "ky4.inp", "-1086000,1265000,0,-695200"),
    "ky10": (WNTR / "library" / "networks" / "ky10.inp", "-1180000,1291000,0,-695200"),
    "net6": (WNTR / "library" / "networks" / "Net6.inp", "450000,2650000,0,0"),
    # Anytown is not in wntr's library folder; WNTR ships it with its tests
    "anytown": (
        WNTR / "tests" / "networks_for_testing" / "Anytown.inp",
        "400000,2700000,0,-695200",
    ),
}
#: networks whose coordinates are to scale (feet): their pipe lengths can be checked
SCALED = ("ky4", "ky10")
SAMPLE_PIPES = 40


@pytest.fixture(scope="module")
def nets(scratch_database: str, tmp_path_factory) -> dict:
    """Every network imported unmodified, with a WNTR valve layer on it."""
    out = {}
    folder = tmp_path_factory.mktemp("valve_layers")
    for name, (path, local) in NETWORKS.items():
        wn = wntr.network.WaterNetworkModel(str(path))
        result = run_import(
            importer_for("pipelines"),
            [path],
            ImportOptions(crs="EPSG:4547", local_transform=local, dataset=name),
            scratch_database,
        )
        layer = wntr.network.layer.generate_valve_layer(wn, "strategic", 2, seed=123)
        csv_path = folder / f"{name}_valves.csv"
        layer.to_csv(csv_path)
        valves = run_import(
            importer_for("valves"), [csv_path], ImportOptions(dataset=name), scratch_database
        )
        out[name] = {"wn": wn, "result": result, "layer": layer, "valves": valves}
    return out


def test_wntr_networks_import_with_wntr_counts(nets: dict, scratch_database: str):
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        for name, n in nets.items():
            wn, r = n["wn"], n["result"]
            # no errors, and no warnings either: the networks pass --strict as they ship
            assert r.status == "succeeded" and r.report.problems == [], name
            assert r.counts["pipeline_node"] == wn.num_nodes, name
            assert r.counts["pipeline_segment"] == wn.num_links, name
            kinds = dict(
                conn.execute(
                    "SELECT link_type, count(*) FROM cim.pipeline_segment WHERE dataset = %s "
                    "GROUP BY 1",
                    (name,),
                ).fetchall()
            )
            assert kinds == {
                k: v
                for k, v in (
                    ("pipe", wn.num_pipes),
                    ("pump", wn.num_pumps),
                    ("valve", wn.num_valves),
                )
                if v
            }, name
            assert n["valves"].counts == {"pipeline_valve": len(n["layer"])}, name
        # the cases the importer used to refuse are in: every parallel link its own segment,
        # pumps and valves at one position as links without length
        twins = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM cim.pipeline_segment WHERE dataset = 'net6' "
            "AND link_type = 'pipe' GROUP BY least(from_node_id, to_node_id), "
            "greatest(from_node_id, to_node_id) HAVING count(*) > 1) t"
        ).fetchone()[0]
        points = dict(
            conn.execute(
                "SELECT link_type, count(*) FROM cim.pipeline_segment WHERE dataset = 'ky10' AND "
                "length_m = 0 GROUP BY 1"
            ).fetchall()
        )
    assert twins == 22
    assert points == {"pump": 13, "valve": 5}


def _oracle_lengths(wn) -> dict[str, float]:
    """3D length per link from WNTR alone: the plan length of start node, vertices and end node
    (feet to metres), combined with the rise between the two node elevations (the importer
    lays both ends at the same depth below them)."""

    def ground(node) -> float:
        return node.base_head if node.node_type == "Reservoir" else node.elevation

    out = {}
    for name, link in wn.links():
        a, b = wn.get_node(link.start_node_name), wn.get_node(link.end_node_name)
        xy = np.array([a.coordinates, *link.vertices, b.coordinates], dtype=float) * FT
        plan = float(np.sum(np.hypot(*np.diff(xy, axis=0).T)))
        out[name] = float(np.hypot(plan, ground(b) - ground(a)))
    return out


def test_stored_lengths_equal_the_vertex_polylines(nets: dict, scratch_database: str):
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        for name in SCALED:
            want = _oracle_lengths(nets[name]["wn"])
            got = dict(
                conn.execute(
                    "SELECT source_id, length_m FROM cim.pipeline_segment WHERE dataset = %s",
                    (name,),
                ).fetchall()
            )
            assert got.keys() == want.keys()
            worst = max(abs(got[k] - want[k]) for k in want)
            assert worst < 1e-3, name
            bent = sum(1 for _, link in nets[name]["wn"].links() if link.vertices)
            assert bent > 100, name  # the check covers many bent pipes


@pytest.fixture(scope="module")
def api(scratch_database: str, nets) -> TestClient:
    from cimtwin.api.app import create_app
    from cimtwin.settings import Settings

    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        yield c


@pytest.mark.parametrize("name", list(NETWORKS))
def test_isolation_through_the_api_equals_wntr_valve_segments(
    nets: dict, api: TestClient, scratch_database: str, name: str
):
    wn, layer = nets[name]["wn"], nets[name]["layer"]
    node_seg, link_seg, _ = wntr.metrics.topographic.valve_segments(wn.to_graph(), layer)
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        seg = {
            sid: (src, length)
            for sid, src, length in conn.execute(
                "SELECT id, source_id, length_m FROM cim.pipeline_segment WHERE dataset = %s",
                (name,),
            )
        }
        point = dict(
            conn.execute(
                "SELECT id, point_no FROM cim.pipeline_node WHERE dataset = %s", (name,)
            ).fetchall()
        )
    by_link = {src: sid for sid, (src, _) in seg.items()}
    # parallel pipes first (where a segment-per-pipe mistake would show), then a seeded sample
    pairs: dict[tuple[str, str], list[str]] = {}
    for pipe_name, pipe in wn.pipes():
        pairs.setdefault(tuple(sorted((pipe.start_node_name, pipe.end_node_name))), []).append(
            pipe_name
        )
    twins = sorted(p for group in pairs.values() if len(group) > 1 for p in group)
    rng = np.random.default_rng(9)
    sample = list(
        dict.fromkeys(
            twins[: SAMPLE_PIPES // 2]
            + rng.choice(
                wn.pipe_name_list, size=min(SAMPLE_PIPES, wn.num_pipes), replace=False
            ).tolist()
        )
    )
    oracle = _oracle_lengths(wn) if name in SCALED else None
    for pipe in sample:
        r = api.post("/pipelines/isolation", json={"segment_id": by_link[pipe], "max_features": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        want = link_seg[pipe]
        want_links = set(link_seg.index[link_seg == want])
        assert {seg[i][0] for i in body["isolated_segments"]["ids"]} == want_links, pipe
        assert {point[i] for i in body["affected_nodes"]["ids"]} == set(
            node_seg.index[node_seg == want]
        ), pipe
        if oracle is not None:  # the length reported is the true one (defect 1)
            assert body["isolated_segments"]["length_m"] == pytest.approx(
                sum(oracle[k] for k in want_links), abs=1e-3 * len(want_links) + 1e-3
            ), pipe
    assert len(sample) >= min(SAMPLE_PIPES, wn.num_pipes)


POINTS = "物探点号,管线类别,管线小类,特征,附属物,X,Y,地面高程,井深,备注\n"
LINES = "起点点号,终点点号,管线类别,管线小类,起点埋深,终点埋深,管径,材质,状态\n"


def test_survey_tables_still_refuse_a_segment_listed_twice(scratch_database: str, tmp_path: Path):
    """In a survey a line twice between the same points is a mistake; in a model a twin main."""
    (tmp_path / "points.csv").write_text(
        POINTS + "A,JS,JP,三通,,2501000,503000,10,,\nB,JS,JP,三通,,2501000,503100,10,,\n",
        encoding="utf-8",
    )
    (tmp_path / "lines.csv").write_text(
        LINES + "A,B,JS,JP,1.2,1.2,200,球墨铸铁,在用\nB,A,JS,JP,1.2,1.2,200,球墨铸铁,在用\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportFailed) as exc:
        run_import(
            importer_for("pipelines"),
            [tmp_path / "points.csv", tmp_path / "lines.csv"],
            ImportOptions(crs="EPSG:4547", dry_run=True),
            scratch_database,
        )
    assert {(p.file, p.row, p.rule) for p in exc.value.report.errors} == {
        ("lines.csv", "3", "duplicate-segment")
    }
