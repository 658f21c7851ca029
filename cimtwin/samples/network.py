"""The pipeline survey model: points (物探点), pipes (管段) and the CJJ 61 table columns.

Shared by the network builders and the writers.  A point carries the single burial depth
every pipe at it uses, so the "same point, same depth" survey rule holds by construction; the
reference (pipe top or invert) depends on the network, see :data:`DEPTH_RANGE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cimtwin.reference import attribute_codes, pipeline_types
from cimtwin.samples.layout import Terrain

POINT_COLUMNS = (
    "物探点号",
    "管线类别",
    "管线小类",
    "特征",
    "附属物",
    "X",
    "Y",
    "地面高程",
    "井深",
    "备注",
)
LINE_COLUMNS = (
    "起点点号",
    "终点点号",
    "管线类别",
    "管线小类",
    "起点埋深",
    "终点埋深",
    "管径",
    "断面",
    "材质",
    "埋设方式",
    "权属单位",
    "建设年代",
    "压力",
    "流向",
    "电压",
    "电缆条数",
    "总孔数",
    "占用孔数",
    "道路名称",
    "状态",
)
MAX_GAP = 75.0  # m between survey points on a straight run
GRAVITY_MINORS = ("YS", "WS")
# Depth reference and allowed depth range per minor type (metres below ground).
DEPTH_RANGE = {
    "JP": (1.0, 1.5),
    "SS": (1.0, 1.5),
    "TR": (0.8, 1.2),
    "GD": (0.7, 1.0),
    "XX": (0.7, 1.0),
    "YS": (1.5, 5.0),
    "WS": (1.5, 5.0),
}


def material(name: str) -> str:
    """A material name, checked against the shipped CJJ 61 dictionary."""
    if name not in attribute_codes("material").values():
        raise ValueError(f"material {name!r} not in the CJJ 61 dictionary")
    return name


def burial(name: str) -> str:
    if name not in attribute_codes("burial").values():
        raise ValueError(f"burial method {name!r} not in the CJJ 61 dictionary")
    return name


def minor_type(major: str, minor: str) -> str:
    if not any(t.major_code == major and t.minor_code == minor for t in pipeline_types()):
        raise ValueError(f"pipeline type {major}/{minor} not in the CJJ 61 dictionary")
    return minor


@dataclass(slots=True)
class SurveyPoint:
    """One 物探点; ``depth`` is the one burial depth every line at this point uses."""

    prefix: str
    major: str
    minor: str
    feature: str
    appurt: str
    x: float  # easting
    y: float  # northing
    ground: float
    depth: float
    well: float | None = None
    remark: str = ""
    road: str = ""
    no: str = ""


@dataclass(slots=True)
class Pipe:
    """One 管段 from point ``a`` to point ``b`` (flow order for gravity networks)."""

    a: int
    b: int
    major: str
    minor: str
    diameter: int | None
    section: str | None
    material: str
    burial: str
    owner: str
    year: int
    pressure: str | None = None
    flow: int | None = None
    voltage: int | None = None
    cables: int | None = None
    holes_total: int | None = None
    holes_used: int | None = None
    road: str = ""
    status: str = "在用"
    reverse: bool = False  # written with start/end swapped and 流向 -1
    end_no: str | None = None  # override of the written end point number (dirty sample)
    start_depth: float | None = None  # overrides of the written depths (dirty sample)
    end_depth: float | None = None


@dataclass
class Network:
    """Points and pipes of one network (one CJJ 61 minor type plus its point prefix)."""

    prefix: str
    major: str
    minor: str
    points: list[SurveyPoint] = field(default_factory=list)
    pipes: list[Pipe] = field(default_factory=list)

    def point(
        self,
        feature: str,
        appurt: str,
        x: float,
        y: float,
        terrain: Terrain,
        depth: float,
        well: float | None = None,
        remark: str = "",
        road: str = "",
        minor: str | None = None,
    ) -> int:
        x, y = round(x, 3), round(y, 3)
        self.points.append(
            SurveyPoint(
                self.prefix,
                self.major,
                minor or self.minor,
                feature,
                appurt,
                x,
                y,
                terrain.ground(x, y),
                round(depth, 2),
                None if well is None else round(well, 2),
                remark,
                road,
            )
        )
        return len(self.points) - 1

    def length(self, p: Pipe) -> float:
        a, b = self.points[p.a], self.points[p.b]
        return math.hypot(b.x - a.x, b.y - a.y)


@dataclass
class PipelineSet:
    """All networks in output order, with point numbers assigned across the whole file."""

    networks: list[Network]

    def number(self) -> None:
        """Give every point its 物探点号 (prefix + zero-padded sequence, unique in the file)."""
        totals: dict[str, int] = {}
        for net in self.networks:
            totals[net.prefix] = totals.get(net.prefix, 0) + len(net.points)
        seq: dict[str, int] = {}
        for net in self.networks:
            width = max(4, len(str(totals[net.prefix])))
            for p in net.points:
                seq[net.prefix] = seq.get(net.prefix, 0) + 1
                p.no = f"{net.prefix}{seq[net.prefix]:0{width}d}"

    def point_rows(self) -> list[list]:
        """Point table rows, typed (None = empty), columns as :data:`POINT_COLUMNS`."""
        rows = []
        for net in self.networks:
            for p in net.points:
                rows.append(
                    [
                        p.no,
                        p.major,
                        p.minor,
                        p.feature,
                        p.appurt,
                        p.y,
                        p.x,
                        p.ground,
                        p.well,
                        p.remark,
                    ]
                )
        return rows

    def line_rows(self) -> list[list]:
        """Line table rows, typed, columns as :data:`LINE_COLUMNS`."""
        rows = []
        for net in self.networks:
            pts = net.points
            for p in net.pipes:
                a, b = pts[p.a], pts[p.b]
                da = a.depth if p.start_depth is None else p.start_depth
                db = b.depth if p.end_depth is None else p.end_depth
                start, end, flow = a.no, b.no, p.flow
                if p.reverse:
                    start, end, da, db, flow = b.no, a.no, db, da, -1
                if p.end_no is not None:
                    end = p.end_no
                rows.append(
                    [
                        start,
                        end,
                        p.major,
                        p.minor,
                        da,
                        db,
                        p.diameter,
                        p.section,
                        p.material,
                        p.burial,
                        p.owner,
                        p.year,
                        p.pressure,
                        flow,
                        p.voltage,
                        p.cables,
                        p.holes_total,
                        p.holes_used,
                        p.road,
                        p.status,
                    ]
                )
        return rows

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for net in self.networks:
            out[f"points_{net.minor}"] = out.get(f"points_{net.minor}", 0) + len(net.points)
            out[f"lines_{net.minor}"] = out.get(f"lines_{net.minor}", 0) + len(net.pipes)
        return out

    def length_km(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for net in self.networks:
            total = sum(net.length(p) for p in net.pipes)
            out[net.minor] = round(out.get(net.minor, 0.0) + total / 1000.0, 3)
        return out
