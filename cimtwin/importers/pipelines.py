"""Pipelines: survey point and line tables (CJJ 61), GIS layers or EPANET models -> 3D nodes
and segments with topology, after the QA a pipeline survey is checked against.

Depth convention (CJJ 61): burial depth is measured to the pipe top for pressure pipes and
cable ducts, and to the invert (inside bottom) for gravity drainage. The stored geometry is the
pipe's centre line: centre = ground - depth - h/2 (top) or ground - depth + h/2 (invert), h
being the diameter or the section height. EPANET models carry no depth: their pipes are laid at
``DEFAULT_EPANET_DEPTH_M`` below the node elevation, which is taken as the ground.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import shapely
from pandas.api.types import union_categoricals

from cimtwin import memory
from cimtwin.errors import UserError
from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import source_crs as layer_source_crs
from cimtwin.importers.pipeline_checks import (
    GRAVITY_NETWORKS,
    check_lines,
    check_points,
    flagger,
    shared_point_consistency,
)
from cimtwin.importers.pipeline_geometry import centre_lines, inner_vertices, vertices_to_storage
from cimtwin.importers.report import ERROR, Report
from cimtwin.importers.sources import (
    TABLE_SUFFIXES,
    line_numbers,
    list_layers,
    load_mapping,
    note_encoding,
    padded,
    read_layer,
    read_tables,
    resolve_columns,
)
from cimtwin.importers.valves import relink_valves
from cimtwin.spatial import bulk
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment, segment_end_keys_sql
from cimtwin.spatial.provenance import batch_dataset

DEFAULT_EPANET_DEPTH_M = 1.2
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
                lines.append(df.assign(_file=_file_column(table.label, len(df)), _row=rows))
            elif {"point_no", "x", "y"} <= pmap.keys():
                df = pd.DataFrame({f: table.frame[c] for f, c in pmap.items()})
                # survey convention: X is the northing, Y the easting
                df = df.rename(columns={"x": "_north", "y": "_east"}).rename(
                    columns={"_north": "y", "_east": "x"}
                )
                points.append(df.assign(_file=_file_column(table.label, len(df)), _row=rows))
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
                points.append(
                    df.assign(_file=_file_column(label, len(df)), _row=ids, _crs=len(crs_seen) - 1)
                )
            elif kinds <= {1, 5}:
                lmap = resolve_columns(cols, "pipeline_lines", mapping)
                df = pd.DataFrame(
                    {
                        f: layer.frame[c].astype("string").fillna("").to_numpy()
                        for f, c in lmap.items()
                    }
                )
                df["vertices"] = [inner_vertices(g) for g in geoms]
                lines.append(
                    df.assign(_file=_file_column(label, len(df)), _row=ids, _crs=len(crs_seen) - 1)
                )
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
    p["_file"], p["_row"] = _file_column(paths[0].name, len(p)), p["line_no"]
    nocoord = p["x"].isna() | p["y"].isna()
    report.add_many(
        paths[0].name,
        p.loc[nocoord, "_row"],
        "coordinates-missing",
        ERROR,
        [f"node {n} has no [COORDINATES] entry" for n in p.loc[nocoord, "point_no"]],
    )
    lines = net.lines.copy()
    lines["_file"], lines["_row"] = _file_column(paths[0].name, len(lines)), lines["line_no"]
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
    """The fields as trimmed text, '' when empty; columns read as text already (a survey
    table's) are kept as they are, not copied."""
    for f in fields:
        if f not in df:
            df[f] = ""
        elif not (
            pd.api.types.is_string_dtype(df[f]) and not df[f].isna().any() and not padded(df[f])
        ):
            df[f] = df[f].astype("string").fillna("").str.strip()
    return df


def _file_column(label: str, rows: int) -> pd.Categorical:
    """The source file of each row, held once: as text it was a string per row (14 MB of
    Python strings over a district's pipes once the checks took it as an array)."""
    return pd.Categorical.from_codes(np.zeros(rows, dtype=np.int8), categories=[label])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame (a single table's kept as it is: ``pd.concat`` copies even one); the files
    stay one categorical column (``pd.concat`` makes differing categories text)."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    files = union_categoricals([f["_file"] for f in frames])
    out = pd.concat([f.drop(columns="_file") for f in frames], ignore_index=True)
    out["_file"] = files
    return out


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
            points = _as_strings(_concat(pts), POINT_FIELDS)
            lines = _as_strings(_concat(lns), LINE_FIELDS)
            del pts, lns
        else:
            fmt = "gis"
            pts, lns, crs_seen = _layer_frames(paths, options, report)
            if not pts or not lns:
                raise UserError("pipelines: need a point layer and a line layer")
            if len({c.to_wkt() for c in crs_seen}) > 1:
                raise UserError("pipelines: the point and line layers are in different CRS")
            src = crs_seen[0]
            points = _as_strings(_concat(pts), POINT_FIELDS)
            lines = _as_strings(_concat(lns), LINE_FIELDS)
        source_crs = crs_mod.crs_label(src)
        if options.network:
            for df in (points, lines):
                df["network"] = df["network"].mask(df["network"] == "", options.network.upper())
        elif len(points) and (points["network"] == "").all():
            raise UserError(_NO_NETWORK.format(files=", ".join(points["_file"].unique())))
        nodes = check_points(points, src, options, report, _device_ends(lines))
        del points  # the source text: the checked columns hold what is written
        memory.trim()
        if "vertices" in lines:  # bent lines: inner vertices the same way as the points
            lines["vertices"] = vertices_to_storage(
                lines["vertices"].tolist(),
                src,
                options,
                flagger(report, lines["_file"].to_numpy(), lines["_row"].to_numpy()),
            )
        segs = check_lines(lines, nodes, report, survey=fmt != "epanet")
        del lines  # what check_lines left of the source
        memory.trim()
        if fmt != "epanet":  # model junctions join pipes of different sizes by design
            shared_point_consistency(segs, nodes, report)
        node_frame, seg_frame, shapes, bbox = self._geometry(nodes, segs)
        del nodes, segs
        return Prepared(
            format=fmt,
            source_crs=source_crs,
            feature_count=len(node_frame) + len(seg_frame),
            frames={PipelineNode: node_frame, PipelineSegment: seg_frame},
            extra={"shapes": {PipelineNode: shapes}},
            bbox=bbox,
        )

    # -- geometry -------------------------------------------------------------------------------
    @staticmethod
    def _geometry(nodes: pd.DataFrame, seg: pd.DataFrame):
        good_nodes = np.isfinite(nodes["ex"].to_numpy()) & ~nodes["_dup"].to_numpy()
        ex, ny, gr = (nodes[c].to_numpy() for c in ("ex", "ny", "ground"))
        # held as WKB until written: 200 000 GEOS points took 44 MB, their WKB 13 MB
        node_wkb = bulk.points_wkb(np.column_stack([ex, ny, np.nan_to_num(gr)]))
        node_geoms = pd.arrays.ArrowExtensionArray(node_wkb)
        node_frame = pd.DataFrame(
            {
                "point_no": nodes["point_no"],
                "network": nodes["network"],
                "subtype": nodes["subtype"],
                "feature": nodes["feature"],
                "appurtenance": nodes["appurtenance"],
                "ground_elevation_m": gr,
                "well_depth_m": nodes["well_depth"],
                "valve_state": _valve_state(nodes),
                "geom": node_geoms,  # hex EWKB a chunk at a time, by the COPY
            },
            copy=False,
        )
        if not good_nodes.all():  # a filtered copy only if some are not written
            node_frame = node_frame[good_nodes]
        seg_frame = _segment_frame(seg, ex, ny, gr, good_nodes)
        bbox = _bbox(ex[good_nodes], ny[good_nodes])
        # for the grid assignment: the written nodes' WKB, kept in Arrow (as bytes objects
        # they were 14 MB more through the write)
        shapes = node_wkb if good_nodes.all() else node_wkb.filter(pa.array(good_nodes))
        return node_frame, seg_frame, shapes, bbox

    # -- writing ----------------------------------------------------------------------------
    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        frames = _with_ids(conn, prepared.frames, batch_dataset(conn, batch_id))
        prepared = Prepared(
            prepared.format,
            prepared.source_crs,
            prepared.feature_count,
            frames,
            prepared.extra,
            prepared.bbox,
        )
        del frames  # the base writer lets each table go once sent
        prepared.extra["batch_id"] = batch_id  # for the keys of the batch's partitions
        counts = super().write(conn, prepared, batch_id)
        # the runner drops the replaced batches' partitions after this: valves on them first
        return counts | relink_valves(conn, prepared.extra.get("replacing", []), batch_id)

    def before_attach(self, model, prepared: Prepared):
        """The pipes' end-node keys, towards this batch's node partition (attached just
        before): checked against its nodes only, where a key of the parents read every
        network's (:data:`SEGMENT_END_KEYS`)."""
        if model is not PipelineSegment:
            return None
        nodes = bulk.partition_name(PipelineNode, prepared.extra["batch_id"])

        def keys(conn: psycopg.Connection, staging) -> None:
            conn.execute(segment_end_keys_sql(staging.as_string(conn), nodes.as_string(conn)))

        return keys

    def county_codes(self, model, frame: pd.DataFrame, written) -> np.ndarray | None:
        """A pipe lies in its from-node's county (both ends are in one batch)."""
        if model is not PipelineSegment:
            return None
        nodes = written[PipelineNode]
        county = pd.Series(nodes["county_code"].to_numpy(), index=nodes["id"].to_numpy())
        return county.reindex(frame["from_node_id"].to_numpy()).to_numpy(dtype=object)


def _segment_frame(
    seg: pd.DataFrame, ex: np.ndarray, ny: np.ndarray, gr: np.ndarray, good_nodes: np.ndarray
) -> pd.DataFrame:
    """The checked pipes as written: 3D centre lines between their end nodes (``ex``, ``ny``,
    ``gr``: the nodes' storage positions and ground), ends as rows of the written nodes. Its
    own function so that the heights and lines made on the way go when it returns."""
    s = seg if seg["ok"].all() else seg[seg["ok"]]  # a filtered copy only if some failed
    gravity = s["network"].isin(GRAVITY_NETWORKS).to_numpy()
    h = np.nan_to_num(s["size_mm"].to_numpy() / 1000.0)
    fa, fb = s["from_i"].to_numpy(), s["to_i"].to_numpy()
    da, db = s["from_depth"].to_numpy(), s["to_depth"].to_numpy()
    ref_a, ref_b = gr[fa] - np.nan_to_num(da), gr[fb] - np.nan_to_num(db)
    centre_shift = np.where(gravity, h / 2, -h / 2)
    za, zb = ref_a + centre_shift, ref_b + centre_shift
    written_row = np.where(good_nodes, np.cumsum(good_nodes) - 1, -1)
    za, zb, vertices = np.round(za, 4), np.round(zb, 4), s["vertices"].to_numpy()
    line_wkb, lengths = centre_lines(ex, ny, fa, fb, za, zb, vertices)
    line_geoms = pd.arrays.ArrowExtensionArray(line_wkb)
    seg_frame = pd.DataFrame(
        {
            # ends as rows of the node frame: ids are given in its order when written
            "_from": written_row[fa],
            "_to": written_row[fb],
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
            "geom": line_geoms,
        },
        copy=False,
    )
    return seg_frame


def _with_ids(conn: psycopg.Connection, frames: dict, dataset: str) -> dict:
    """The prepared nodes and pipes, taken out of ``frames`` (so that nothing else holds them
    once written), with node ids reserved and the pipes' ends given them."""
    nodes = frames.pop(PipelineNode)
    segs = frames.pop(PipelineSegment)
    ends = np.concatenate([segs["_from"].to_numpy(), segs["_to"].to_numpy()])
    if len(ends) and ends.min() < 0:  # a pipe on a point that is not written: refused
        raise ValueError("pipelines: a segment ends on a point without a valid position")
    ids = bulk.reserve_ids(conn, PipelineNode, len(nodes))
    return {
        PipelineNode: nodes.assign(id=ids, dataset=_constant(dataset, nodes.index)),
        PipelineSegment: segs.drop(columns=["_from", "_to"]).assign(
            from_node_id=ids[segs["_from"].to_numpy()],
            to_node_id=ids[segs["_to"].to_numpy()],
            dataset=_constant(dataset, segs.index),
        ),
    }


def _constant(text: str, index: pd.Index) -> pd.Series:
    """One string for every row, held once: as a text column it was copied into each row
    (26 MB of dataset names over a district's nodes and pipes)."""
    out = np.empty(len(index), dtype=object)
    out[:] = text
    return pd.Series(out, index=index, dtype=object)


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


def _bbox(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float] | None:
    """Storage-CRS extent of the written points (the segments run between them)."""
    if len(x) == 0:
        return None
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())
