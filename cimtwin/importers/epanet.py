"""Read EPANET 2.2 ``.inp`` files into cimtwin's canonical pipeline survey tables.

Water utilities often hold their distribution network only as a hydraulic model. Turning the
model into the same point/line tables that CJJ 61 survey deliveries are mapped to lets the
pipeline importer run one validation and 3D-geometry path for both sources.

This is a plain-Python parser of the text format (no EPANET/WNTR dependency). It keeps what a
spatial pipe network needs: nodes with elevations and coordinates, links with their end nodes,
sizes and vertices. Curves, patterns, controls and water-quality data are skipped.

Units: EPANET's US flow units (CFS, GPM, MGD, IMGD, AFD) imply feet for lengths and elevations
and inches for diameters; those are converted to metres and millimetres. Roughness is kept as
written, since its meaning depends on the head-loss formula (H-W C, D-W, C-M).

EPANET has no burial depth: every link gets ``default_depth_m`` at both ends, an assumption the
importer reports to the user.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from math import isfinite
from pathlib import Path

import numpy as np
import pandas as pd

from cimtwin.errors import UserError

US_FLOW_UNITS = frozenset({"CFS", "GPM", "MGD", "IMGD", "AFD"})
SI_FLOW_UNITS = frozenset({"LPS", "LPM", "MLD", "CMH", "CMD"})
VALVE_TYPES = frozenset({"PRV", "PSV", "PBV", "FCV", "TCV", "GPV", "PCV"})  # PCV: EPANET 2.3
# EPANET status keywords -> the spelling used in the output tables
STATUS_WORDS = {"OPEN": "Open", "CLOSED": "Closed", "CV": "CV", "ACTIVE": "Active"}

FT_TO_M = 0.3048
IN_TO_MM = 25.4

POINT_COLUMNS = [
    "point_no",
    "network",
    "subtype",
    "feature",
    "appurtenance",
    "x",
    "y",
    "ground_elevation",
    "well_depth",
    "node_type",
    "line_no",
]
LINE_COLUMNS = [
    "from_point",
    "to_point",
    "network",
    "subtype",
    "link_id",
    "link_type",
    "diameter",
    "length_m",
    "roughness",
    "minor_loss",
    "status",
    "valve_type",
    "vertices",
    "from_depth",
    "to_depth",
    "flow",
    "line_no",
]

SUBTYPE = "JP"
# node type -> (feature 特征, appurtenance 附属物) in the survey tables
NODE_FEATURES = {
    "junction": ("节点", None),
    "reservoir": ("水源", "水源"),
    "tank": ("水池", "水池"),
}
# minimum fields per data row (EPANET rejects shorter rows too)
MIN_FIELDS = {
    "JUNCTIONS": 2,  # ID Elev [Demand Pattern]
    "RESERVOIRS": 2,  # ID Head [Pattern]
    "TANKS": 2,  # ID Elev [InitLvl MinLvl MaxLvl Diam MinVol VolCurve Overflow]
    "PIPES": 6,  # ID Node1 Node2 Length Diam Roughness [MinorLoss Status]
    "PUMPS": 4,  # ID Node1 Node2 KEYWORD value ...
    "VALVES": 6,  # ID Node1 Node2 Diam Type Setting [MinorLoss]
    "COORDINATES": 3,  # Node X Y
    "VERTICES": 3,  # Link X Y
    "STATUS": 2,  # Link Status/Setting
}
_PIPE_NUMBERS = {3: "length", 4: "diameter", 5: "roughness", 6: "minor loss"}
_PIPE_NUMBERS_NO_MINOR = {3: "length", 4: "diameter", 5: "roughness"}
_XY = {1: "x coordinate", 2: "y coordinate"}
_VERTEX_XY = {1: "vertex x", 2: "vertex y"}
_QUOTED = re.compile(r'"([^"]*)"|(\S+)')


@dataclass
class EpanetNetwork:
    """An EPANET model as canonical survey tables plus the header facts the importer reports."""

    title: str
    flow_units: str  # e.g. GPM, LPS
    us_units: bool  # True for CFS/GPM/MGD/IMGD/AFD (feet, inches), False for SI
    points: pd.DataFrame  # one row per node, columns POINT_COLUMNS
    lines: pd.DataFrame  # one row per link, columns LINE_COLUMNS


class _Parser:
    """One pass over the file; cross-references are checked at the end, so order is free."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.title: list[str] = []
        self.flow_units = "GPM"  # EPANET's default when [OPTIONS] gives no Units
        self.saw_sections: set[str] = set()
        # node id -> (node_type, raw elevation/head, line_no)
        self.nodes: dict[str, tuple[str, float, int]] = {}
        # link id -> (type, from, to, length, diameter, roughness, minor, status, valve, line_no)
        self.links: dict[str, tuple] = {}
        self.coords: dict[str, tuple[float, float, int]] = {}  # node id -> (x, y, line_no)
        self.bends: dict[str, list[tuple[float, float]]] = {}  # link id -> vertices in order
        self.bend_lines: dict[str, int] = {}  # link id -> line of its first vertex
        self.status: list[tuple[str, str | None, int]] = []

    # -- helpers -------------------------------------------------------------------------------

    def fail(self, line_no: int | None, problem: str) -> UserError:
        where = self.name if line_no is None else f"{self.name}:{line_no}"
        return UserError(f"{where}: {problem}")

    def bad_number(self, f: list[str], n: int, what: str, labels: dict[int, str]) -> UserError:
        """The error for the first field in ``labels`` that is not a finite number."""
        for index, label in labels.items():
            text = f[index]
            try:
                value = float(text)
            except ValueError:
                return self.fail(n, f"{what} {f[0]} {label} {text!r} is not a number")
            if not math.isfinite(value):
                return self.fail(n, f"{what} {f[0]} {label} {text!r} is not a finite number")
        return self.fail(n, f"{what} {f[0]} has numbers out of range")

    def add_node(self, f: list[str], n: int, node_type: str, label: str) -> None:
        # float() and the finiteness test inline: this runs once per node of a large file
        try:
            value = float(f[1])
        except ValueError:
            raise self.bad_number(f, n, node_type, {1: label}) from None
        if not isfinite(value):
            raise self.bad_number(f, n, node_type, {1: label})
        node_id = f[0]
        if node_id in self.nodes:
            first = self.nodes[node_id][2]
            raise self.fail(n, f"node {node_id} is already defined at line {first}")
        self.nodes[node_id] = (node_type, value, n)

    def add_link(self, link_id: str, row: tuple, n: int) -> None:
        if link_id in self.links:
            first = self.links[link_id][-1]
            raise self.fail(n, f"link {link_id} is already defined at line {first}")
        self.links[link_id] = row

    # -- sections ------------------------------------------------------------------------------

    def junction(self, f: list[str], n: int) -> None:
        self.add_node(f, n, "junction", "elevation")

    def reservoir(self, f: list[str], n: int) -> None:
        self.add_node(f, n, "reservoir", "head")

    def tank(self, f: list[str], n: int) -> None:
        self.add_node(f, n, "tank", "elevation")

    def pipe(self, f: list[str], n: int) -> None:
        minor, status_text = 0.0, None
        extra = f[6:8]
        # EPANET accepts a status in place of the minor loss: "ID N1 N2 L D R Closed"
        if extra and extra[0].upper() in STATUS_WORDS:
            status_text = extra[0]
            extra = []
        elif len(extra) > 1:
            status_text = extra[1]
        labels = _PIPE_NUMBERS if extra else _PIPE_NUMBERS_NO_MINOR
        try:
            length, diameter, roughness = float(f[3]), float(f[4]), float(f[5])
            if extra:
                minor = float(extra[0])
        except ValueError:
            raise self.bad_number(f, n, "pipe", labels) from None
        if not isfinite(length + diameter + roughness + minor):
            raise self.bad_number(f, n, "pipe", labels)
        status = None
        if status_text is not None:
            status = STATUS_WORDS.get(status_text.upper())
            if status is None:
                raise self.fail(n, f"pipe {f[0]} has unknown status {status_text!r}")
        row = ("pipe", f[1], f[2], length, diameter, roughness, minor, status, None, n)
        self.add_link(f[0], row, n)

    def pump(self, f: list[str], n: int) -> None:
        nan = math.nan
        self.add_link(f[0], ("pump", f[1], f[2], nan, nan, nan, nan, None, None, n), n)

    def valve(self, f: list[str], n: int) -> None:
        labels = {3: "diameter", 6: "minor loss"} if len(f) > 6 else {3: "diameter"}
        try:
            diameter = float(f[3])
            minor = float(f[6]) if len(f) > 6 else 0.0
        except ValueError:
            raise self.bad_number(f, n, "valve", labels) from None
        if not isfinite(diameter + minor):
            raise self.bad_number(f, n, "valve", labels)
        valve_type = f[4].upper()
        if valve_type not in VALVE_TYPES:
            raise self.fail(n, f"valve {f[0]} has unknown type {f[4]!r}")
        row = ("valve", f[1], f[2], math.nan, diameter, math.nan, minor, None, valve_type, n)
        self.add_link(f[0], row, n)

    def coordinate(self, f: list[str], n: int) -> None:
        try:
            x, y = float(f[1]), float(f[2])
        except ValueError:
            raise self.bad_number(f, n, "node", _XY) from None
        if not isfinite(x + y):
            raise self.bad_number(f, n, "node", _XY)
        self.coords[f[0]] = (x, y, n)  # a repeated node: the last coordinates win

    def vertex(self, f: list[str], n: int) -> None:
        try:
            x, y = float(f[1]), float(f[2])
        except ValueError:
            raise self.bad_number(f, n, "link", _VERTEX_XY) from None
        if not isfinite(x + y):
            raise self.bad_number(f, n, "link", _VERTEX_XY)
        bends = self.bends.get(f[0])
        if bends is None:
            self.bends[f[0]] = [(x, y)]
            self.bend_lines[f[0]] = n
        else:
            bends.append((x, y))

    def status_row(self, f: list[str], n: int) -> None:
        word = STATUS_WORDS.get(f[1].upper())
        if word is None:  # a numeric setting (pump speed, valve setting), not a status
            try:
                float(f[1])
            except ValueError:
                raise self.bad_number(f, n, "link", {1: "status/setting"}) from None
        self.status.append((f[0], word, n))

    def option(self, f: list[str], n: int) -> None:
        if f[0].upper() != "UNITS":
            return
        if len(f) < 2:
            raise self.fail(n, "option Units has no value")
        units = f[1].upper()
        if units not in US_FLOW_UNITS | SI_FLOW_UNITS:
            known = ", ".join(sorted(US_FLOW_UNITS | SI_FLOW_UNITS))
            raise self.fail(n, f"unknown flow units {f[1]!r} (expected one of {known})")
        self.flow_units = units

    # -- driver --------------------------------------------------------------------------------

    def parse(self, text: str) -> None:
        handlers: dict[str, Callable[[list[str], int], None]] = {
            "JUNCTIONS": self.junction,
            "RESERVOIRS": self.reservoir,
            "TANKS": self.tank,
            "PIPES": self.pipe,
            "PUMPS": self.pump,
            "VALVES": self.valve,
            "COORDINATES": self.coordinate,
            "VERTICES": self.vertex,
            "STATUS": self.status_row,
            "OPTIONS": self.option,
        }
        section = ""
        handler = None
        in_title = False
        min_fields = 0
        for line_no, raw in enumerate(text.splitlines(), start=1):
            if ";" in raw:
                raw = raw[: raw.index(";")]
            fields = raw.split()
            if not fields:
                continue
            if fields[0][0] == "[":
                line = raw.strip()
                close = line.find("]")
                section = (line[1:close] if close > 0 else line[1:]).strip().upper()
                if section == "END":
                    break
                self.saw_sections.add(section)
                handler = handlers.get(section)
                in_title = section == "TITLE"
                min_fields = MIN_FIELDS.get(section, 1)
                continue
            if handler is None:  # before any section, or a section this reader ignores
                if in_title:
                    self.title.append(raw.strip())
                continue
            if '"' in raw:
                fields = _tokens(raw)
            if len(fields) < min_fields:
                raise self.fail(
                    line_no,
                    f"[{section}] row has {len(fields)} field(s), needs at least {min_fields}",
                )
            handler(fields, line_no)

    def network(self, network: str, default_depth_m: float) -> EpanetNetwork:
        if not self.saw_sections & {"JUNCTIONS", "PIPES"}:
            raise self.fail(None, "no [JUNCTIONS] or [PIPES] section; not an EPANET .inp file?")
        if not self.nodes:
            raise self.fail(None, "defines no nodes ([JUNCTIONS], [RESERVOIRS], [TANKS])")
        us = self.flow_units in US_FLOW_UNITS
        length_factor = FT_TO_M if us else 1.0
        diameter_factor = IN_TO_MM if us else 1.0

        nodes, links = self.nodes, self.links
        # cross-references as set differences; a per-row search only to name the first culprit
        undefined = self.coords.keys() - nodes.keys()
        if undefined:
            node_id = min(undefined, key=lambda i: self.coords[i][2])
            problem = f"coordinates for node {node_id}, which is not defined"
            raise self.fail(self.coords[node_id][2], problem)
        undefined = self.bends.keys() - links.keys()
        if undefined:
            link_id = min(undefined, key=self.bend_lines.__getitem__)
            problem = f"vertex for link {link_id}, which is not defined"
            raise self.fail(self.bend_lines[link_id], problem)
        for link_id, word, n in self.status:
            link = links.get(link_id)
            if link is None:
                raise self.fail(n, f"status for link {link_id}, which is not defined")
            if word is not None and link[7] != "CV":  # a check valve's status is fixed
                links[link_id] = (*link[:7], word, *link[8:])

        link_ids = list(links)
        columns = list(zip(*links.values(), strict=True)) or [()] * 10
        kinds, starts, ends, lengths, diameters, roughness, minors, statuses, valves, link_lines = (
            columns
        )
        if not (set(starts) | set(ends)) <= nodes.keys():
            for link_id, (kind, start, end, *_, n) in links.items():
                for node_id in (start, end):
                    if node_id not in nodes:
                        problem = f"{kind} {link_id} ends at node {node_id}, which is not defined"
                        raise self.fail(n, problem)

        # columns by transposing the collected rows: no per-row DataFrame work
        node_ids = list(nodes)
        node_types, values, node_lines = zip(*nodes.values(), strict=True)
        xs = np.full(len(node_ids), math.nan)
        ys = np.full(len(node_ids), math.nan)
        if self.coords:
            where = pd.Index(list(self.coords)).get_indexer(node_ids)
            found = where >= 0
            table = np.array(list(self.coords.values()), dtype="float64")
            xs[found] = table[where[found], 0]
            ys[found] = table[where[found], 1]
        points = pd.DataFrame(
            {
                "point_no": node_ids,
                "network": network,
                "subtype": SUBTYPE,
                "feature": [NODE_FEATURES[t][0] for t in node_types],
                "appurtenance": pd.Series([NODE_FEATURES[t][1] for t in node_types], dtype=object),
                "x": xs,
                "y": ys,
                "ground_elevation": np.array(values, dtype="float64") * length_factor,
                "well_depth": np.full(len(node_ids), math.nan),
                "node_type": list(node_types),
                "line_no": np.array(node_lines, dtype="int64"),
            },
            columns=POINT_COLUMNS,
        )

        count = len(link_ids)
        bends = self.bends
        lines = pd.DataFrame(
            {
                "from_point": pd.Series(starts, dtype="str"),
                "to_point": pd.Series(ends, dtype="str"),
                "network": network,
                "subtype": SUBTYPE,
                "link_id": pd.Series(link_ids, dtype="str"),
                "link_type": pd.Series(kinds, dtype="str"),
                "diameter": np.array(diameters, dtype="float64") * diameter_factor,
                "length_m": np.array(lengths, dtype="float64") * length_factor,
                "roughness": np.array(roughness, dtype="float64"),
                "minor_loss": np.array(minors, dtype="float64"),
                "status": pd.Series(statuses, dtype=object),
                "valve_type": pd.Series(valves, dtype=object),
                "vertices": pd.Series([bends.get(i, []) for i in link_ids], dtype=object),
                "from_depth": np.full(count, float(default_depth_m)),
                "to_depth": np.full(count, float(default_depth_m)),
                "flow": pd.Series([None] * count, dtype=object),
                "line_no": np.array(link_lines, dtype="int64"),
            },
            columns=LINE_COLUMNS,
        )
        return EpanetNetwork(
            title="\n".join(self.title),
            flow_units=self.flow_units,
            us_units=us,
            points=points,
            lines=lines,
        )


def _tokens(line: str) -> list[str]:
    """Split on whitespace, keeping ``"quoted ids"`` whole, as EPANET 2.2 does."""
    return [quoted if bare == "" else bare for quoted, bare in _QUOTED.findall(line)]


def _decode(data: bytes) -> str:
    """EPANET writes the local code page; try UTF-8 first, then latin-1 (which never fails)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_inp(path: Path, network: str = "JS", default_depth_m: float = 1.2) -> EpanetNetwork:
    """Read an EPANET ``.inp`` file as canonical survey point/line tables.

    ``network`` is the CJJ 61 major code the rows are tagged with (JS: water supply);
    ``default_depth_m`` stands in for the burial depth EPANET does not record. Raises
    ``UserError`` naming ``file:line`` for undefined nodes, duplicate ids, bad numbers and
    short rows, so a surveyor can fix the file without a traceback.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read EPANET file ({exc.strerror or exc})") from None
    parser = _Parser(path.name)
    # Millions of short-lived rows and no reference cycles: collector passes over the growing
    # tables would only cost time (about a third of a 300 000-link read), so pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser.parse(_decode(data))
        return parser.network(network, default_depth_m)
    finally:
        if collecting:
            gc.enable()
