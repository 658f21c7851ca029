"""Pipelines: survey point and line tables (CJJ 61), GIS layers or EPANET models -> 3D nodes
and segments with topology, after the QA a pipeline survey is checked against.

Depth convention (CJJ 61): burial depth is measured to the pipe top for pressure pipes and
cable ducts, and to the invert (inside bottom) for gravity drainage. The stored geometry is the
pipe's centre line: centre = ground - depth - h/2 (top) or ground - depth + h/2 (invert), h
being the diameter or the section height. EPANET models carry no depth: their pipes are laid at
``DEFAULT_EPANET_DEPTH_M`` below the node elevation, which is taken as the ground.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import shapely

from cimtwin.errors import UserError
from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import coordinates_to_storage
from cimtwin.importers.layers import source_crs as layer_source_crs
from cimtwin.importers.pipeline_geometry import centre_lines, inner_vertices, vertices_to_storage
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import (
    TABLE_SUFFIXES,
    line_numbers,
    list_layers,
    load_mapping,
    note_encoding,
    parse_numbers,
    read_layer,
    read_tables,
    resolve_columns,
)
from cimtwin.reference import attribute_codes, pipeline_types
from cimtwin.spatial import bulk
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment
from cimtwin.spatial.provenance import batch_dataset

GRAVITY_NETWORKS = frozenset({"PS"})
#: plausible burial depth (m) per network: outside is a warning; outside HARD_DEPTH an error
TYPICAL_DEPTH = {
    "JS": (0.3, 4.0),
    "PS": (0.5, 8.0),
    "RQ": (0.3, 4.0),
    "RL": (0.3, 4.0),
    "DL": (0.2, 3.0),
    "TX": (0.2, 3.0),
    "GY": (0.3, 4.0),
    "QT": (0.2, 10.0),
}
HARD_DEPTH = (0.0, 15.0)
ABOVE_GROUND_BURIAL = frozenset({"JK", "SJ", "DM"})  # overhead, riser, on the ground
UPHILL_TOLERANCE_M = 0.005
SHARED_POINT_DEPTH_TOLERANCE_M = 0.05
DEFAULT_EPANET_DEPTH_M = 1.2
SECTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[xX×*]\s*(\d+(?:\.\d+)?)\s*$")
POINT_FIELDS = [
    "point_no",
    "network",
    "subtype",
    "feature",
    "appurtenance",
    "x",
    "y",
    "ground_elevation",
    "well_depth",
    "remark",
]
LINE_FIELDS = [
    "from_point",
    "to_point",
    "network",
    "subtype",
    "from_depth",
    "to_depth",
    "diameter",
    "section",
    "material",
    "burial",
    "owner",
    "build_year",
    "pressure",
    "flow",
    "voltage",
    "cable_count",
    "holes_total",
    "holes_used",
    "road",
    "status",
]


def _flagger(report: Report, files: np.ndarray, rows: np.ndarray):
    """``flag(mask, rule, severity, messages)``: report the masked rows, each with its file."""

    def flag(mask, rule: str, severity: str, messages) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        msgs = np.empty(len(mask), dtype=object)
        msgs[mask] = messages if isinstance(messages, str) else list(messages)
        for file in np.unique(files[mask]):
            sel = mask & (files == file)
            report.add_many(file, rows[sel], rule, severity, list(msgs[sel]))

    return flag


# --- reading ---------------------------------------------------------------------------------
def _table_frames(paths, options, report):
    """Point and line rows from CJJ 61 tables (CSV/XLSX): canonical columns, x = easting."""
    mapping = load_mapping(options.mapping)
    points, lines, seen = [], [], []
    for path in paths:
        for table in read_tables(path, mapping):
            cols = list(table.frame.columns)
            pmap = resolve_columns(cols, "pipeline_points", mapping)
            lmap = resolve_columns(cols, "pipeline_lines", mapping)
            rows = line_numbers(table.frame.index)
            seen.append((table.label, table.frame.empty))
            if {"from_point", "to_point"} <= lmap.keys():
                df = pd.DataFrame({f: table.frame[c] for f, c in lmap.items()})
                lines.append(df.assign(_file=table.label, _row=rows))
            elif {"point_no", "x", "y"} <= pmap.keys():
                df = pd.DataFrame({f: table.frame[c] for f, c in pmap.items()})
                # survey convention: X is the northing, Y the easting
                df = df.rename(columns={"x": "_north", "y": "_east"}).rename(
                    columns={"_north": "y", "_east": "x"}
                )
                points.append(df.assign(_file=table.label, _row=rows))
            else:
                raise UserError(
                    f"{table.label}: neither a point table (物探点号, X, Y ...) nor a line "
                    f"table (起点点号, 终点点号 ...); headers: {', '.join(cols)}; "
                    "pass --mapping FILE to name your columns"
                )
    _refuse_some_empty(seen, options, report)
    return points, lines


def _refuse_some_empty(
    seen: list[tuple[str, bool]], options: ImportOptions, report: Report
) -> None:
    """One empty table or layer among full ones would silently drop the dataset's points or
    pipes (all empty is refused by the runner, for every kind)."""
    if options.allow_empty or all(empty for _, empty in seen):
        return
    for label, empty in seen:
        if empty:
            report.error(
                label,
                None,
                "no-rows",
                f"no rows in {label} (a header only); pass "
                "--allow-empty if the dataset is meant to lose what it held",
            )


def _layer_frames(paths, options, report):
    """Point and line rows from GIS layers: positions from the geometries."""
    mapping = load_mapping(options.mapping)
    points, lines, crs_seen, seen = [], [], [], []
    for path in paths:
        for name in list_layers(path):
            layer = read_layer(path, name)
            note_encoding(layer, report)
            seen.append((layer.label, layer.frame.empty))
            geoms = np.asarray(layer.frame.geometry.values, dtype=object)
            cols = [c for c in layer.frame.columns if c != "geometry"]
            kinds = set(shapely.get_type_id(geoms[~shapely.is_missing(geoms)]))
            label, ids = layer.label, np.asarray(layer.frame.index)
            crs_seen.append(layer_source_crs(layer.crs, options, layer.label))
            if kinds <= {0}:  # points
                pmap = resolve_columns(cols, "pipeline_points", mapping)
                pmap.pop("x", None)
                pmap.pop("y", None)
                df = pd.DataFrame(
                    {
                        f: layer.frame[c].astype("string").fillna("").to_numpy()
                        for f, c in pmap.items()
                    }
                )
                xy = shapely.get_coordinates(geoms, include_z=True)
                df["x"], df["y"] = xy[:, 0].astype(str), xy[:, 1].astype(str)
                if "ground_elevation" not in df and np.isfinite(xy[:, 2]).any():
                    df["ground_elevation"] = xy[:, 2].astype(str)
                points.append(df.assign(_file=label, _row=ids, _crs=len(crs_seen) - 1))
            elif kinds <= {1, 5}:
                lmap = resolve_columns(cols, "pipeline_lines", mapping)
                df = pd.DataFrame(
                    {
                        f: layer.frame[c].astype("string").fillna("").to_numpy()
                        for f, c in lmap.items()
                    }
                )
                df["vertices"] = [inner_vertices(g) for g in geoms]
                lines.append(df.assign(_file=label, _row=ids, _crs=len(crs_seen) - 1))
            else:
                report.warning(
                    label, None, "layer-skipped", "layer holds neither points nor lines; skipped"
                )
    _refuse_some_empty(seen, options, report)
    return points, lines, crs_seen


def _epanet_frames(paths, options, report):
    from cimtwin.importers.epanet import read_inp

    if len(paths) != 1:
        raise UserError("pipelines: give one EPANET .inp file at a time")
    net = read_inp(
        paths[0], network=options.network or "JS", default_depth_m=DEFAULT_EPANET_DEPTH_M
    )
    p = net.points.copy()
    p["_file"], p["_row"] = paths[0].name, p["line_no"]
    nocoord = p["x"].isna() | p["y"].isna()
    report.add_many(
        paths[0].name,
        p.loc[nocoord, "_row"],
        "coordinates-missing",
        ERROR,
        [f"node {n} has no [COORDINATES] entry" for n in p.loc[nocoord, "point_no"]],
    )
    lines = net.lines.copy()
    lines["_file"], lines["_row"] = paths[0].name, lines["line_no"]
    # EPANET's Open/Closed is an operating state, not the CJJ 61 asset status
    lines["status"] = "在用"
    return p, lines


def _numbers_as_text(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Float columns as the text a table would hold ('' for NaN), for the shared checks."""
    df = df.copy()
    for c in cols:
        df[c] = [("" if np.isnan(v) else repr(float(v))) for v in df[c].to_numpy(dtype=float)]
    return df


def _as_strings(df: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    for f in fields:
        if f not in df:
            df[f] = ""
        df[f] = df[f].astype("string").fillna("").str.strip()
    return df


_NO_NETWORK = (
    "{files}: no network code (管线类别 column, or it is empty): pass --network "
    "CODE for a file of one network (JS water, PS drainage, RQ gas, RL heat, DL "
    "power, TX telecom ...)"
)


# --- the importer -----------------------------------------------------------------------------
class PipelinesImporter(CopyWriter):
    kind = "pipelines"
    models = (PipelineNode, PipelineSegment)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        suffixes = {p.suffix.lower() for p in paths}
        source_crs = None
        if suffixes == {".inp"}:
            fmt = "epanet"
            if not options.crs:
                raise UserError(f"{paths[0].name}: EPANET files carry no CRS; pass --crs")
            points, lines = _epanet_frames(paths, options, report)
            points = _as_strings(
                _numbers_as_text(points, ["x", "y", "ground_elevation"]), POINT_FIELDS
            )
            lines = _as_strings(
                _numbers_as_text(lines, ["diameter", "from_depth", "to_depth"]), LINE_FIELDS
            )
            src = crs_mod.parse_crs(options.crs)
        elif suffixes <= TABLE_SUFFIXES:
            fmt = "cjj61-table"
            if not options.crs:
                raise UserError(
                    f"{paths[0].name}: survey tables carry no CRS; pass --crs (e.g. EPSG:4547)"
                )
            src = crs_mod.parse_crs(options.crs)
            pts, lns = _table_frames(paths, options, report)
            if not pts or not lns:
                raise UserError(
                    "pipelines: need both a point table and a line table "
                    f"(got {len(pts)} point and {len(lns)} line tables)"
                )
            points = _as_strings(pd.concat(pts, ignore_index=True), POINT_FIELDS)
            lines = _as_strings(pd.concat(lns, ignore_index=True), LINE_FIELDS)
        else:
            fmt = "gis"
            pts, lns, crs_seen = _layer_frames(paths, options, report)
            if not pts or not lns:
                raise UserError("pipelines: need a point layer and a line layer")
            if len({c.to_wkt() for c in crs_seen}) > 1:
                raise UserError("pipelines: the point and line layers are in different CRS")
            src = crs_seen[0]
            points = _as_strings(pd.concat(pts, ignore_index=True), POINT_FIELDS)
            lines = _as_strings(pd.concat(lns, ignore_index=True), LINE_FIELDS)
        source_crs = crs_mod.crs_label(src)
        if options.network:
            for df in (points, lines):
                df["network"] = df["network"].mask(df["network"] == "", options.network.upper())
        elif len(points) and (points["network"] == "").all():
            raise UserError(_NO_NETWORK.format(files=", ".join(points["_file"].unique())))
        nodes = self._check_points(points, src, options, report, _device_ends(lines))
        if "vertices" in lines:  # bent lines: inner vertices the same way as the points
            lines["vertices"] = vertices_to_storage(
                lines["vertices"].tolist(),
                src,
                options,
                _flagger(report, lines["_file"].to_numpy(), lines["_row"].to_numpy()),
            )
        segs = self._check_lines(lines, nodes, report, survey=fmt != "epanet")
        node_frame, seg_frame, shapes = self._geometry(nodes, segs)
        return Prepared(
            format=fmt,
            source_crs=source_crs,
            feature_count=len(node_frame) + len(seg_frame),
            frames={PipelineNode: node_frame, PipelineSegment: seg_frame},
            extra={"shapes": {PipelineNode: shapes}},
            bbox=_bbox(shapes),
        )

    # -- points ---------------------------------------------------------------------------------
    @staticmethod
    def _check_points(
        p: pd.DataFrame,
        src,
        options: ImportOptions,
        report: Report,
        device_ends: frozenset[frozenset[str]] = frozenset(),
    ):
        types = {t.minor_code: t.major_code for t in pipeline_types()}
        networks = set(types.values())
        f, r = p["_file"].to_numpy(), p["_row"].to_numpy()
        flag = _flagger(report, f, r)

        no = p["point_no"]
        flag(no == "", "point-no-missing", ERROR, "no point number (物探点号)")
        dup = no.duplicated(keep=False) & (no != "")
        flag(
            dup,
            "duplicate-point-no",
            ERROR,
            [f"point number {v} appears more than once" for v in no[dup]],
        )
        num = {}
        for col, label in (
            ("x", "X/Y coordinate"),
            ("y", "X/Y coordinate"),
            ("ground_elevation", "ground elevation"),
            ("well_depth", "well depth"),
        ):
            num[col], bad = parse_numbers(p[col])
            flag(
                bad, "not-a-number", ERROR, [f"{label} {v!r} is not a number" for v in p[col][bad]]
            )
        x, y, ground = num["x"], num["y"], num["ground_elevation"]
        flag(
            (np.isnan(x) | np.isnan(y)) & (p["x"] == "").to_numpy() | (p["y"] == "").to_numpy(),
            "coordinates-missing",
            ERROR,
            "no X/Y",
        )
        flag(
            np.isnan(ground) & (p["ground_elevation"] == "").to_numpy(),
            "ground-missing",
            ERROR,
            "no ground elevation (地面高程)",
        )
        net = p["network"].str.upper()
        flag(
            ~net.isin(networks),
            "network-unknown",
            ERROR,
            [f"network {v!r} is not a CJJ 61 code" for v in net[~net.isin(networks)]],
        )
        sub = p["subtype"].str.upper()
        badsub = (sub != "") & (sub.map(types).fillna("") != net)
        flag(
            badsub,
            "subtype-unknown",
            ERROR,
            [
                f"subtype {s!r} is not a CJJ 61 subtype of {n}"
                for s, n in zip(sub[badsub], net[badsub], strict=True)
            ],
        )
        finite = np.isfinite(x) & np.isfinite(y)
        ex, ny, problems = coordinates_to_storage(x, y, src, options)
        for rule, mask, message in problems:
            flag(mask, rule, ERROR, message)
        # two point numbers at one position and height in one network (duplicate X/Y/H)
        key = pd.DataFrame(
            {"n": net, "x": np.round(ex, 3), "y": np.round(ny, 3), "h": np.round(ground, 2)}
        )
        same = key.duplicated(keep=False).to_numpy() & finite & ~dup.to_numpy()
        if device_ends and same.any():  # a model's pump or valve: its two ends at one place
            key = key.reset_index(drop=True)
            for rows in key[same].groupby(list(key.columns)).groups.values():
                if frozenset(no.to_numpy()[rows]) in device_ends:
                    same[rows] = False
        flag(
            same,
            "duplicate-position",
            WARNING,
            [f"point {v} shares its X/Y/H with another point" for v in no[same]],
        )
        return pd.DataFrame(
            {
                "point_no": no,
                "network": net,
                "subtype": sub.where(sub != "", None),
                "feature": p["feature"].where(p["feature"] != "", None),
                "appurtenance": p["appurtenance"].where(p["appurtenance"] != "", None),
                "ground": ground,
                "well_depth": num["well_depth"],
                "remark": p["remark"].where(p["remark"] != "", None),
                "ex": ex,
                "ny": ny,
                "_file": f,
                "_row": r,
                "_dup": dup.to_numpy(),
            }
        )

    # -- lines ----------------------------------------------------------------------------------
    @staticmethod
    def _check_lines(
        ln: pd.DataFrame, nodes: pd.DataFrame, report: Report, survey: bool = True
    ) -> pd.DataFrame:
        f, r = ln["_file"].to_numpy(), ln["_row"].to_numpy()
        flag = _flagger(report, f, r)

        types = {t.minor_code: t.major_code for t in pipeline_types()}
        a, b = ln["from_point"], ln["to_point"]
        flag((a == "") | (b == ""), "line-end-missing", ERROR, "no start or end point number")
        known = nodes.loc[~nodes["_dup"], ["point_no"]].assign(_i=lambda d: d.index)
        idx = pd.Series(known["_i"].to_numpy(), index=known["point_no"].to_numpy())
        dup_nos = set(nodes.loc[nodes["_dup"], "point_no"])
        ia = a.map(idx).to_numpy(dtype=float)
        ib = b.map(idx).to_numpy(dtype=float)
        for end, col, pos in (("start", a, ia), ("end", b, ib)):
            missing = np.isnan(pos) & (col != "").to_numpy() & ~col.isin(dup_nos).to_numpy()
            flag(
                missing,
                "line-end-unknown",
                ERROR,
                [f"{end} point {v} is not in the point table" for v in col[missing]],
            )
        flag(
            (a == b) & (a != ""),
            "line-self-loop",
            ERROR,
            [f"line starts and ends at point {v}" for v in a[(a == b) & (a != "")]],
        )
        ok = ~np.isnan(ia) & ~np.isnan(ib) & (a != b).to_numpy()
        ia_i = np.where(ok, ia, 0).astype(int)
        ib_i = np.where(ok, ib, 0).astype(int)
        ex, ny = nodes["ex"].to_numpy(), nodes["ny"].to_numpy()
        length2d = np.hypot(ex[ib_i] - ex[ia_i], ny[ib_i] - ny[ia_i])
        has_vertices = (
            ln["vertices"].map(len).to_numpy() > 0 if "vertices" in ln else np.zeros(len(ln), bool)
        )
        lt = ln["link_type"] if "link_type" in ln else pd.Series("pipe", index=ln.index)
        # a pump or valve of a model is a device at one place: its two nodes may coincide
        device = lt.isin(["pump", "valve"]).to_numpy()
        zero = ok & (length2d < 0.001) & ~has_vertices & ~device
        flag(
            zero,
            "line-zero-length",
            ERROR,
            [
                f"points {x} and {y} are at the same position"
                for x, y in zip(a[zero], b[zero], strict=True)
            ],
        )
        if survey:  # in a survey a repeated or reversed line is a mistake; in a model parallel
            # links (twin mains, pumps side by side) are separate links with their own ids
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            dupseg = pd.DataFrame({"lo": lo, "hi": hi}).duplicated(keep="first").to_numpy() & ok
            flag(
                dupseg,
                "duplicate-segment",
                ERROR,
                [
                    f"segment {x}-{y} is listed twice (or reversed)"
                    for x, y in zip(a[dupseg], b[dupseg], strict=True)
                ],
            )
        net = ln["network"].str.upper()
        netpt = nodes["network"].to_numpy()
        net = net.mask(net == "", pd.Series(netpt[ia_i], index=ln.index).where(ok, ""))
        mism = ok & (net.to_numpy() != netpt[ia_i])
        flag(
            mism,
            "network-mismatch",
            ERROR,
            [
                f"line network {n} differs from its start point's {netpt[i]}"
                for n, i in zip(net[mism], ia_i[mism], strict=True)
            ],
        )
        sub = ln["subtype"].str.upper()
        badsub = (sub != "") & (sub.map(types).fillna("") != net)
        flag(
            badsub,
            "subtype-unknown",
            ERROR,
            [
                f"subtype {s!r} is not a CJJ 61 subtype of {n}"
                for s, n in zip(sub[badsub], net[badsub], strict=True)
            ],
        )
        # numbers
        num = {}
        for col in (
            "from_depth",
            "to_depth",
            "diameter",
            "build_year",
            "voltage",
            "cable_count",
            "holes_total",
            "holes_used",
        ):
            num[col], bad = parse_numbers(ln[col])
            flag(bad, "not-a-number", ERROR, [f"{col} {v!r} is not a number" for v in ln[col][bad]])
        sec = ln["section"].str.extract(SECTION).astype(float)
        badsec = (ln["section"] != "").to_numpy() & sec[0].isna().to_numpy()
        flag(
            badsec,
            "section-format",
            ERROR,
            [f"section {v!r} is not WIDTHxHEIGHT in mm" for v in ln["section"][badsec]],
        )
        # dictionaries: names or codes accepted
        coded = {}
        for col, dict_name in (
            ("material", "material"),
            ("burial", "burial"),
            ("status", "status"),
        ):
            codes = attribute_codes(dict_name)
            by_name = {v: k for k, v in codes.items()}
            vals = ln[col]
            # object dtype: an all-empty column must not become a typed all-null column
            code = (
                vals.astype(object)
                .map(lambda v, c=codes, n=by_name: v if v in c else n.get(v))
                .astype(object)
            )
            unknown = (vals != "").to_numpy() & code.isna().to_numpy()
            flag(
                unknown,
                f"{col}-unknown",
                ERROR,
                [f"{col} {v!r} is not in the CJJ 61 {dict_name} dictionary" for v in vals[unknown]],
            )
            coded[col] = code.where(code.notna(), None)
        # depth ranges
        burial = coded["burial"].fillna("").to_numpy()
        above = np.isin(burial, list(ABOVE_GROUND_BURIAL))
        lows = net.map(lambda n: TYPICAL_DEPTH.get(n, HARD_DEPTH)[0]).to_numpy(dtype=float)
        highs = net.map(lambda n: TYPICAL_DEPTH.get(n, HARD_DEPTH)[1]).to_numpy(dtype=float)
        for col, end in (("from_depth", "start"), ("to_depth", "end")):
            d = num[col]
            hard = ~above & np.isfinite(d) & ((d < HARD_DEPTH[0]) | (d > HARD_DEPTH[1]))
            flag(
                hard,
                "depth-range",
                ERROR,
                [
                    f"{end} depth {v:g} m is outside {HARD_DEPTH[0]:g}-{HARD_DEPTH[1]:g} m"
                    for v in d[hard]
                ],
            )
            soft = ~above & ~hard & np.isfinite(d) & ((d < lows) | (d > highs))
            flag(
                soft,
                "depth-typical",
                WARNING,
                [
                    f"{end} depth {v:g} m is unusual for {n} ({lo:g}-{hi:g} m)"
                    for v, n, lo, hi in zip(
                        d[soft], net[soft], lows[soft], highs[soft], strict=True
                    )
                ],
            )
            missing = ok & ~np.isfinite(d) & ~above
            flag(missing, "depth-missing", ERROR, f"no {end} depth")
        flow = pd.to_numeric(ln["flow"].replace("", np.nan), errors="coerce").to_numpy()
        badflow = (ln["flow"] != "").to_numpy() & ~np.isin(flow, (-1, 0, 1))
        flag(
            badflow,
            "flow-direction",
            ERROR,
            [f"flow direction {v!r} is not 1, -1 or empty" for v in ln["flow"][badflow]],
        )
        gravity = net.isin(GRAVITY_NETWORKS).to_numpy()
        flow = np.where(np.isin(flow, (-1, 1)), flow, np.where(gravity, 1, 0)).astype(int)
        size_mm = np.where(np.isfinite(num["diameter"]), num["diameter"], sec[1].to_numpy())
        # gravity drainage must fall in its flow direction (invert = ground - depth)
        g_a, g_b = nodes["ground"].to_numpy()[ia_i], nodes["ground"].to_numpy()[ib_i]
        inv_a, inv_b = g_a - num["from_depth"], g_b - num["to_depth"]
        rise = np.where(flow >= 0, inv_b - inv_a, inv_a - inv_b)
        uphill = ok & gravity & np.isfinite(rise) & (rise > UPHILL_TOLERANCE_M)
        flag(
            uphill,
            "gravity-uphill",
            ERROR,
            [
                f"gravity pipe {x}->{y} rises {d:.3f} m in its flow direction"
                for x, y, d in zip(
                    np.where(flow >= 0, a, b)[uphill],
                    np.where(flow >= 0, b, a)[uphill],
                    rise[uphill],
                    strict=True,
                )
            ],
        )
        seg = pd.DataFrame(
            {
                "from_i": ia_i,
                "to_i": ib_i,
                "ok": ok,
                "network": net,
                "subtype": sub.where(sub != "", None),
                "from_depth": num["from_depth"],
                "to_depth": num["to_depth"],
                "diameter_mm": num["diameter"],
                "width_mm": sec[0].to_numpy(),
                "height_mm": sec[1].to_numpy(),
                "size_mm": size_mm,
                "material": coded["material"],
                "burial": coded["burial"],
                "status": coded["status"],
                "owner": ln["owner"].where(ln["owner"] != "", None),
                "build_year": num["build_year"],
                "pressure_class": ln["pressure"].where(ln["pressure"] != "", None),
                "voltage_kv": num["voltage"],
                "cable_count": num["cable_count"],
                "holes_total": num["holes_total"],
                "holes_used": num["holes_used"],
                "road": ln["road"].where(ln["road"] != "", None),
                "flow_direction": flow,
                "link_type": lt.to_numpy(),
                "source_id": ln.get("link_id"),
                "vertices": ln["vertices"] if "vertices" in ln else [[]] * len(ln),
                "_file": f,
                "_row": r,
            }
        )
        if survey:  # model junctions join pipes of different sizes by design
            PipelinesImporter._shared_point_consistency(seg, nodes, report)
        return seg

    @staticmethod
    def _shared_point_consistency(seg: pd.DataFrame, nodes: pd.DataFrame, report) -> None:
        """At a plain through-point of a pressure network (two pipes meet, no fitting that
        changes them), depth, material and size must agree."""
        s = seg[seg["ok"] & ~seg["network"].isin(GRAVITY_NETWORKS)]
        ends = pd.concat(
            [
                pd.DataFrame(
                    {
                        "node": s["from_i"],
                        "depth": s["from_depth"],
                        "mat": s["material"],
                        "size": s["size_mm"],
                        "file": s["_file"],
                        "row": s["_row"],
                    }
                ),
                pd.DataFrame(
                    {
                        "node": s["to_i"],
                        "depth": s["to_depth"],
                        "mat": s["material"],
                        "size": s["size_mm"],
                        "file": s["_file"],
                        "row": s["_row"],
                    }
                ),
            ]
        )
        deg = ends.groupby("node")["node"].transform("size")
        ends = ends[deg == 2]
        feature = nodes["feature"].fillna("").to_numpy()
        changes = np.char.find(feature[ends["node"].to_numpy()].astype(str), "变") >= 0
        ends = ends[~changes]
        g = ends.groupby("node")
        spread = g["depth"].max() - g["depth"].min()
        mats = g["mat"].nunique()
        sizes = g["size"].nunique()
        last = g[["file", "row"]].last()
        bad = (spread > SHARED_POINT_DEPTH_TOLERANCE_M) | (mats > 1) | (sizes > 1)
        point_no = nodes["point_no"].to_numpy()
        for node_i in spread.index[bad.to_numpy()]:
            probs = []
            if spread[node_i] > SHARED_POINT_DEPTH_TOLERANCE_M:
                probs.append(f"depths differ by {spread[node_i]:.2f} m")
            if mats[node_i] > 1:
                probs.append("materials differ")
            if sizes[node_i] > 1:
                probs.append("sizes differ")
            report.warning(
                last.at[node_i, "file"],
                last.at[node_i, "row"],
                "shared-point-attributes",
                f"at point {point_no[node_i]}: " + ", ".join(probs),
            )

    # -- geometry -------------------------------------------------------------------------------
    @staticmethod
    def _geometry(nodes: pd.DataFrame, seg: pd.DataFrame):
        good_nodes = np.isfinite(nodes["ex"].to_numpy()) & ~nodes["_dup"].to_numpy()
        ex, ny, gr = (nodes[c].to_numpy() for c in ("ex", "ny", "ground"))
        node_geoms = shapely.points(ex, ny, np.nan_to_num(gr))
        node_frame = pd.DataFrame(
            {
                "_key": nodes["point_no"].to_numpy(),
                "point_no": nodes["point_no"],
                "network": nodes["network"],
                "subtype": nodes["subtype"],
                "feature": nodes["feature"],
                "appurtenance": nodes["appurtenance"],
                "ground_elevation_m": gr,
                "well_depth_m": nodes["well_depth"],
                "valve_state": _valve_state(nodes),
                "geom": bulk.geometry_hex(node_geoms, dims=3),
            }
        )
        node_frame = node_frame[good_nodes]
        s = seg[seg["ok"]].copy()
        gravity = s["network"].isin(GRAVITY_NETWORKS).to_numpy()
        h = np.nan_to_num(s["size_mm"].to_numpy() / 1000.0)
        fa, fb = s["from_i"].to_numpy(), s["to_i"].to_numpy()
        da, db = s["from_depth"].to_numpy(), s["to_depth"].to_numpy()
        ref_a, ref_b = gr[fa] - np.nan_to_num(da), gr[fb] - np.nan_to_num(db)
        centre_shift = np.where(gravity, h / 2, -h / 2)
        za, zb = ref_a + centre_shift, ref_b + centre_shift
        line_geoms, lengths = centre_lines(
            ex, ny, fa, fb, np.round(za, 4), np.round(zb, 4), s["vertices"].to_numpy()
        )
        seg_frame = pd.DataFrame(
            {
                "_from": nodes["point_no"].to_numpy()[fa],
                "_to": nodes["point_no"].to_numpy()[fb],
                "network": s["network"],
                "subtype": s["subtype"],
                "from_depth_m": da,
                "to_depth_m": db,
                "from_elevation_m": np.round(ref_a, 4),
                "to_elevation_m": np.round(ref_b, 4),
                "depth_ref": np.where(gravity, "invert", "top"),
                "diameter_mm": s["diameter_mm"],
                "width_mm": s["width_mm"],
                "height_mm": s["height_mm"],
                "material": s["material"],
                "burial": s["burial"],
                "pressure_class": s["pressure_class"],
                "voltage_kv": s["voltage_kv"],
                "cable_count": s["cable_count"].astype("Int64"),
                "holes_total": s["holes_total"].astype("Int64"),
                "holes_used": s["holes_used"].astype("Int64"),
                "flow_direction": s["flow_direction"],
                "owner": s["owner"],
                "build_year": s["build_year"].astype("Int64"),
                "status": s["status"],
                "road": s["road"],
                "link_type": s["link_type"],
                "source_id": s["source_id"],
                "length_m": lengths,
                "geom": bulk.geometry_hex(line_geoms, dims=3),
            }
        )
        return node_frame, seg_frame, node_geoms[good_nodes]

    # -- writing ----------------------------------------------------------------------------
    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        dataset = batch_dataset(conn, batch_id)
        nodes = prepared.frames[PipelineNode]
        segs = prepared.frames[PipelineSegment]
        ids = bulk.reserve_ids(conn, PipelineNode, len(nodes))
        by_no = pd.Series(ids, index=nodes["_key"].to_numpy())
        node_out = nodes.drop(columns=["_key"]).assign(id=ids, dataset=dataset)
        seg_out = segs.drop(columns=["_from", "_to"]).assign(
            from_node_id=by_no.reindex(segs["_from"]).to_numpy(),
            to_node_id=by_no.reindex(segs["_to"]).to_numpy(),
            dataset=dataset,
        )
        prepared = Prepared(
            prepared.format,
            prepared.source_crs,
            prepared.feature_count,
            {PipelineNode: node_out, PipelineSegment: seg_out},
            prepared.extra,
            prepared.bbox,
        )
        return super().write(conn, prepared, batch_id)


def _device_ends(lines: pd.DataFrame) -> frozenset[frozenset[str]]:
    """The end-point pairs of pumps and valves (model links), which may share a position."""
    if "link_type" not in lines:
        return frozenset()
    dev = lines[lines["link_type"].isin(["pump", "valve"])]
    return frozenset(
        frozenset(pair) for pair in zip(dev["from_point"], dev["to_point"], strict=True)
    )


def _valve_state(nodes: pd.DataFrame) -> np.ndarray:
    """Valves are open unless the survey remark says closed (关闭/常闭)."""
    is_valve = nodes["appurtenance"].fillna("").str.contains("阀").to_numpy()
    closed = nodes["remark"].fillna("").str.contains("关闭|常闭|closed", case=False).to_numpy()
    state = np.where(closed, "closed", "open").astype(object)
    state[~is_valve] = None
    return state


def _bbox(node_geoms: np.ndarray) -> tuple[float, float, float, float] | None:
    """Storage-CRS extent of the written points (the segments run between them)."""
    if len(node_geoms) == 0:
        return None
    x0, y0, x1, y1 = (float(v) for v in shapely.total_bounds(node_geoms))
    return x0, y0, x1, y1
