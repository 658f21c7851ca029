"""The checks a pipeline survey is held to (CJJ 61 and the importer's plausibility rules):
point numbers, coordinates, networks and subtypes, depths, sizes, dictionaries, gravity falls,
shared-point consistency. Each rule reports every offending row with its file; the importer
(:mod:`cimtwin.importers.pipelines`) turns what passes into 3D nodes and segments.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cimtwin.importers.base import ImportOptions
from cimtwin.importers.layers import coordinates_to_storage
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.sources import parse_numbers
from cimtwin.reference import attribute_codes, pipeline_types

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
SECTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[xX×*]\s*(\d+(?:\.\d+)?)\s*$")


def flagger(report: Report, files: np.ndarray, rows: np.ndarray):
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


# --- points ---------------------------------------------------------------------------------
def check_points(
    p: pd.DataFrame,
    src,
    options: ImportOptions,
    report: Report,
    device_ends: frozenset[frozenset[str]] = frozenset(),
):
    types = {t.minor_code: t.major_code for t in pipeline_types()}
    networks = set(types.values())
    f, r = p["_file"].to_numpy(), p["_row"].to_numpy()
    flag = flagger(report, f, r)

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
        flag(bad, "not-a-number", ERROR, [f"{label} {v!r} is not a number" for v in p[col][bad]])
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
        },
        copy=False,  # the columns as made here, not copied again
    )


# --- lines ----------------------------------------------------------------------------------
def node_positions(point_nos: pd.Series, nodes: pd.DataFrame) -> np.ndarray:
    """The row in ``nodes`` of each point number (NaN: not there, or not unique there).

    Arrow's hash lookup, not ``Series.map``: no Python string per line end, and several times
    faster on a district's 220 000 pipes."""
    known = np.flatnonzero(~nodes["_dup"].to_numpy())
    values = _arrow_text(nodes["point_no"]).take(known)
    keys = _arrow_text(point_nos)
    at = pc.index_in(keys, value_set=values).to_numpy(zero_copy_only=False)
    found = ~np.isnan(at)
    out = np.full(len(at), np.nan)
    out[found] = known[at[found].astype(np.int64)]
    return out


def _arrow_text(series: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The column as Arrow text: its own buffers when it is Arrow-backed already."""
    return pa.array(series, from_pandas=True).cast(pa.large_string())


def section_sizes(section: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Width and height (mm) of each WIDTHxHEIGHT section; NaN where empty or not that form.
    Parsed for the filled cells only (most pipes are round)."""
    width, height = np.full(len(section), np.nan), np.full(len(section), np.nan)
    filled = (section != "").to_numpy()
    if filled.any():
        sizes = section[filled].str.extract(SECTION).astype(float)
        width[filled], height[filled] = sizes[0].to_numpy(), sizes[1].to_numpy()
    return width, height


def lookup(values: pd.Series, fn) -> np.ndarray:
    """``fn`` of each value, called once per distinct value (a column of a few codes)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([fn(v) for v in uniques] + [fn(None)], dtype=object)
    return table[codes]


def check_lines(
    ln: pd.DataFrame, nodes: pd.DataFrame, report: Report, survey: bool = True
) -> pd.DataFrame:
    """The line checks, row by row and across lines; the checked pipes as a frame. ``ln`` is
    consumed: each source column is dropped once checked, so a district's source text (58 MB)
    and the checked columns are not held at once. The shared-point check runs on the result
    (:func:`shared_point_consistency`), once the caller has let the source go."""
    f, r = ln["_file"].to_numpy(), ln["_row"].to_numpy()
    flag = flagger(report, f, r)

    types = {t.minor_code: t.major_code for t in pipeline_types()}
    a, b = ln["from_point"], ln["to_point"]
    ia_i, ib_i, ok, lt = _line_ends(ln, a, b, nodes, flag)
    if survey:  # in a survey a repeated or reversed line is a mistake; in a model parallel
        # links (twin mains, pumps side by side) are separate links with their own ids
        _flag_duplicate_segments(a, b, ok, flag)
    net = ln.pop("network").str.upper()
    # the start point's network, taken in Arrow (no Python string per pipe)
    start_net = pd.Series(nodes["network"].array.take(ia_i), index=ln.index)
    net = net.mask(net == "", start_net.where(ok, ""))
    mism = ok & (net != start_net).to_numpy()
    flag(
        mism,
        "network-mismatch",
        ERROR,
        [
            f"line network {n} differs from its start point's {m}"
            for n, m in zip(net[mism], start_net[mism], strict=True)
        ],
    )
    sub = ln.pop("subtype").str.upper()
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
        text = ln.pop(col)
        num[col], bad = parse_numbers(text)
        flag(bad, "not-a-number", ERROR, [f"{col} {v!r} is not a number" for v in text[bad]])
    section = ln.pop("section")
    width, height = section_sizes(section)
    badsec = (section != "").to_numpy() & np.isnan(width)
    flag(
        badsec,
        "section-format",
        ERROR,
        [f"section {v!r} is not WIDTHxHEIGHT in mm" for v in section[badsec]],
    )
    del section
    # dictionaries: names or codes accepted
    coded = {}
    for col, dict_name in (
        ("material", "material"),
        ("burial", "burial"),
        ("status", "status"),
    ):
        codes = attribute_codes(dict_name)
        by_name = {v: k for k, v in codes.items()}
        vals = ln.pop(col)
        # object dtype: an all-empty column must not become a typed all-null column
        code = pd.Series(
            lookup(vals, lambda v, c=codes, n=by_name: v if v in c else n.get(v)),
            index=vals.index,
            dtype=object,
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
    _flag_depths(num, net, above, ok, flag)
    flow_text = ln.pop("flow")
    flow = pd.to_numeric(flow_text.replace("", np.nan), errors="coerce").to_numpy()
    badflow = (flow_text != "").to_numpy() & ~np.isin(flow, (-1, 0, 1))
    flag(
        badflow,
        "flow-direction",
        ERROR,
        [f"flow direction {v!r} is not 1, -1 or empty" for v in flow_text[badflow]],
    )
    del flow_text
    gravity = net.isin(GRAVITY_NETWORKS).to_numpy()
    flow = np.where(np.isin(flow, (-1, 1)), flow, np.where(gravity, 1, 0)).astype(int)
    size_mm = np.where(np.isfinite(num["diameter"]), num["diameter"], height)
    _flag_uphill(a, b, ok & gravity, flow, nodes, ia_i, ib_i, num, flag)
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
            "width_mm": width,
            "height_mm": height,
            "size_mm": size_mm,
            "material": coded["material"],
            "burial": coded["burial"],
            "status": coded["status"],
            "owner": _none_if_empty(ln.pop("owner")),
            "build_year": num["build_year"],
            "pressure_class": _none_if_empty(ln.pop("pressure")),
            "voltage_kv": num["voltage"],
            "cable_count": num["cable_count"],
            "holes_total": num["holes_total"],
            "holes_used": num["holes_used"],
            "road": _none_if_empty(ln.pop("road")),
            "flow_direction": flow,
            "link_type": lt.set_axis(ln.index),
            "source_id": ln.get("link_id"),
            "vertices": ln.pop("vertices") if "vertices" in ln else [[]] * len(ln),
            "_file": f,
            "_row": r,
        },
        copy=False,  # the columns as made here, not copied again
    )
    return seg


def _line_ends(ln: pd.DataFrame, a: pd.Series, b: pd.Series, nodes: pd.DataFrame, flag):
    """Each line's end nodes (rows of ``nodes``; 0 where not ``ok``), which lines have both,
    and the link types; the end checks flagged (its temporaries go with the call)."""
    flag((a == "") | (b == ""), "line-end-missing", ERROR, "no start or end point number")
    dup_nos = set(nodes.loc[nodes["_dup"], "point_no"])
    ia, ib = node_positions(a, nodes), node_positions(b, nodes)
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
    return ia_i, ib_i, ok, lt


def _flag_duplicate_segments(a: pd.Series, b: pd.Series, ok: np.ndarray, flag) -> None:
    """A line listed twice, or reversed."""
    # the unordered pair of point numbers as one integer (codes of both columns at once)
    codes = pd.factorize(pd.concat([a, b], ignore_index=True))[0].astype(np.int64) + 1
    ca, cb = codes[: len(a)], codes[len(a) :]
    pair = np.minimum(ca, cb) * (int(codes.max(initial=0)) + 1) + np.maximum(ca, cb)
    dupseg = pd.Series(pair).duplicated(keep="first").to_numpy() & ok
    flag(
        dupseg,
        "duplicate-segment",
        ERROR,
        [
            f"segment {x}-{y} is listed twice (or reversed)"
            for x, y in zip(a[dupseg], b[dupseg], strict=True)
        ],
    )


def _flag_depths(num: dict, net: pd.Series, above: np.ndarray, ok: np.ndarray, flag) -> None:
    """Burial depths against the hard range and the network's typical one."""
    lows = lookup(net, lambda n: TYPICAL_DEPTH.get(n, HARD_DEPTH)[0]).astype(float)
    highs = lookup(net, lambda n: TYPICAL_DEPTH.get(n, HARD_DEPTH)[1]).astype(float)
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
                for v, n, lo, hi in zip(d[soft], net[soft], lows[soft], highs[soft], strict=True)
            ],
        )
        missing = ok & ~np.isfinite(d) & ~above
        flag(missing, "depth-missing", ERROR, f"no {end} depth")


def _flag_uphill(
    a: pd.Series,
    b: pd.Series,
    gravity: np.ndarray,
    flow: np.ndarray,
    nodes: pd.DataFrame,
    ia_i: np.ndarray,
    ib_i: np.ndarray,
    num: dict,
    flag,
) -> None:
    """``gravity``: the checked gravity pipes, which must not rise in their flow direction."""
    # gravity drainage must fall in its flow direction (invert = ground - depth)
    g_a, g_b = nodes["ground"].to_numpy()[ia_i], nodes["ground"].to_numpy()[ib_i]
    inv_a, inv_b = g_a - num["from_depth"], g_b - num["to_depth"]
    rise = np.where(flow >= 0, inv_b - inv_a, inv_a - inv_b)
    uphill = gravity & np.isfinite(rise) & (rise > UPHILL_TOLERANCE_M)
    flag(
        uphill,
        "gravity-uphill",
        ERROR,
        [
            f"gravity pipe {x}->{y} rises {d:.3f} m in its flow direction"
            for x, y, d in zip(
                np.where(flow[uphill] >= 0, a[uphill], b[uphill]),
                np.where(flow[uphill] >= 0, b[uphill], a[uphill]),
                rise[uphill],
                strict=True,
            )
        ],
    )


def _none_if_empty(text: pd.Series) -> pd.Series:
    return text.where(text != "", None)


def shared_point_consistency(seg: pd.DataFrame, nodes: pd.DataFrame, report) -> None:
    """At a plain through-point of a pressure network (two pipes meet, no fitting that
    changes them), depth, material and size must agree.

    On arrays of pipe ends (two per pipe) sorted by point, not a grouped frame of them: a
    district's check held 75 MB more than the survey itself with that frame."""
    rows = np.flatnonzero(seg["ok"].to_numpy() & ~seg["network"].isin(GRAVITY_NETWORKS).to_numpy())
    node = np.concatenate([seg["from_i"].to_numpy()[rows], seg["to_i"].to_numpy()[rows]])
    depth = np.concatenate(
        [seg["from_depth"].to_numpy(dtype=float)[rows], seg["to_depth"].to_numpy(dtype=float)[rows]]
    )
    end_row = np.concatenate([rows, rows])  # the pipe each end belongs to
    # a point where exactly two pipe ends meet, without a fitting that changes the pipe (变)
    meet = np.bincount(node, minlength=len(nodes))[node] == 2
    changes = nodes["feature"].str.contains("变", regex=False).fillna(False).to_numpy(bool)
    meet &= ~changes[node]
    keep = np.flatnonzero(meet)
    keep = keep[np.argsort(node[keep], kind="stable")]  # pairs: the point's two ends in order
    first, last = keep[0::2], keep[1::2]
    if not len(first):
        return
    # NaN-skipping as a grouped max - min / nunique: a missing value differs from nothing
    spread = np.abs(depth[first] - depth[last])
    spread = np.where(np.isnan(spread), 0.0, spread)
    mat_codes = pd.factorize(seg["material"])[0]
    size = seg["size_mm"].to_numpy(dtype=float)

    def differs(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        va, vb = values[end_row[first]], values[end_row[last]]
        return ~missing[end_row[first]] & ~missing[end_row[last]] & (va != vb)

    mats = differs(mat_codes, mat_codes < 0)
    sizes = differs(size, np.isnan(size))
    bad = (spread > SHARED_POINT_DEPTH_TOLERANCE_M) | mats | sizes
    bad_at = np.flatnonzero(bad)
    at = end_row[last[bad_at]]  # reported on the later pipe, as the grouped frame's last()
    files, lines = seg["_file"].iloc[at].to_numpy(), seg["_row"].iloc[at].to_numpy()
    points = nodes["point_no"].iloc[node[first[bad_at]]].to_numpy()
    for k, i in enumerate(bad_at):
        probs = []
        if spread[i] > SHARED_POINT_DEPTH_TOLERANCE_M:
            probs.append(f"depths differ by {spread[i]:.2f} m")
        if mats[i]:
            probs.append("materials differ")
        if sizes[i]:
            probs.append("sizes differ")
        report.warning(
            files[k],
            lines[k],
            "shared-point-attributes",
            f"at point {points[k]}: " + ", ".join(probs),
        )
