"""Isolation valves: a valve layer of (link, node) pairs on an imported pipeline dataset.

The format is the one WNTR writes with ``valve_layer.to_csv(path)``: a first, unnamed column
with the valve number, then ``link`` and ``node``; an optional ``state`` column (open/closed,
开启/关闭) may follow. XLSX sheets with the same columns work too.

A valve sits on the link next to the node. Links are looked up by ``source_id`` (the link id
of an EPANET model) and nodes by ``point_no`` in the pipelines dataset the valves belong to,
which ``--dataset`` names: ``--dataset net3`` loads the valves of dataset ``net3``;
``--dataset net3#strategic`` a second, separately replaceable layer on the same network. For
survey networks (no link ids) a link may be written ``FROM-TO`` with the two point numbers.

Ids are checked against the database when the rows are written (a dry run checks the file
only); an unknown link or node, or a node that is not an end of its link, fails the import
with the file and row named, and nothing is written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from cimtwin.db.connect import one_row_sync
from cimtwin.errors import UserError
from cimtwin.importers.base import ImportOptions, Prepared
from cimtwin.importers.report import ERROR, Report
from cimtwin.importers.runner import ImportFailed
from cimtwin.importers.sources import (
    decode_text,
    line_numbers,
    load_mapping,
    read_tables,
    resolve_columns,
)
from cimtwin.spatial import bulk
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment, PipelineValve
from cimtwin.spatial.provenance import ImportBatch
from cimtwin.spatial.sql_toolkit import table

#: column aliases (a user's --mapping section ``valves`` is tried first)
ALIASES = {
    "valve_no": [
        "valve_no",
        "valve",
        "valve_id",
        "id",
        "阀门编号",
        "编号",
        "unnamed: 0",
        "unnamed:0",
    ],
    "link": ["link", "link_id", "pipe", "pipe_id", "管段", "管段编号", "管线"],
    "node": ["node", "node_id", "point_no", "节点", "点号", "物探点号"],
    "state": ["state", "status", "状态", "valve_state"],
}
STATES = {
    "open": "open",
    "opened": "open",
    "开启": "open",
    "开": "open",
    "常开": "open",
    "closed": "closed",
    "close": "closed",
    "关闭": "closed",
    "关": "closed",
    "常闭": "closed",
}
DATASET_SEPARATOR = "#"
#: where the valve point is drawn: this far from its node along the pipe (m), at most a quarter
#: of the pipe
VALVE_OFFSET_M = 1.0


def network_dataset(dataset: str | None) -> str:
    if not dataset:
        raise UserError(
            "valves: pass --dataset NAME, the pipelines dataset the valves sit on "
            f"(e.g. --dataset net3, or net3{DATASET_SEPARATOR}layer2 for another "
            "layer on the same network)"
        )
    return dataset.split(DATASET_SEPARATOR, 1)[0]


def _read(path: Path) -> list[tuple[str, pd.DataFrame]]:
    """(label, frame of strings) per table; CSV read here to keep WNTR's unnamed index."""
    if path.suffix.lower() in (".csv", ".txt"):
        text, _ = decode_text(path)
        try:
            frame = pd.read_csv(
                io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise UserError(f"{path}: not a readable CSV table ({exc})") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        return [(path.name, frame.apply(lambda s: s.astype(str).str.strip()))]
    return [(t.label, t.frame) for t in read_tables(path)]


class ValvesImporter:
    kind = "valves"
    models = (PipelineValve,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        nds = network_dataset(options.dataset)
        user = load_mapping(options.mapping).get("valves", {})
        aliases = {"valves": {f: list(user.get(f, [])) + a for f, a in ALIASES.items()}}
        frames = []
        for path in paths:
            for label, frame in _read(path):
                cols = list(frame.columns)
                found = resolve_columns(cols, "valves", aliases)
                if "" in cols and "valve_no" not in found:
                    found["valve_no"] = ""
                missing = [f for f in ("link", "node") if f not in found]
                if missing:
                    raise UserError(
                        f"{label}: no column for {', '.join(missing)} (headers "
                        f"found: {', '.join(cols)}); a valve layer has columns "
                        "link,node as WNTR writes it"
                    )
                rows = line_numbers(frame.index)
                df = pd.DataFrame(
                    {
                        "valve_no": frame[found["valve_no"]]
                        if "valve_no" in found
                        else pd.Series(np.arange(len(frame)).astype(str), index=frame.index),
                        "link": frame[found["link"]],
                        "node": frame[found["node"]],
                        "state": frame[found["state"]] if "state" in found else "",
                        "_file": label,
                        "_row": rows,
                    }
                )
                frames.append(df)
        df = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["valve_no", "link", "node", "state", "_file", "_row"])
        )
        for col, what in (("link", "link id"), ("node", "node id"), ("valve_no", "valve number")):
            bad = df[col] == ""
            for f, r in zip(df.loc[bad, "_file"], df.loc[bad, "_row"], strict=True):
                report.add(f, r, f"{col}-missing", ERROR, f"no {what}")
        too_long = df["valve_no"].str.len() > 32
        for f, r, v in zip(
            df.loc[too_long, "_file"],
            df.loc[too_long, "_row"],
            df.loc[too_long, "valve_no"],
            strict=True,
        ):
            report.add(f, r, "valve-no-length", ERROR, f"valve number {v!r} is over 32 characters")
        dup = df["valve_no"].duplicated(keep=False) & (df["valve_no"] != "")
        for f, r, v in zip(
            df.loc[dup, "_file"], df.loc[dup, "_row"], df.loc[dup, "valve_no"], strict=True
        ):
            report.add(
                f, r, "duplicate-valve-no", ERROR, f"valve number {v} appears more than once"
            )
        state = df["state"].str.lower().map(lambda v: STATES.get(v, "open" if v == "" else None))
        bad = state.isna()
        for f, r, v in zip(
            df.loc[bad, "_file"], df.loc[bad, "_row"], df.loc[bad, "state"], strict=True
        ):
            report.add(f, r, "valve-state", ERROR, f"state {v!r} is not open or closed (开启/关闭)")
        df["state"] = state
        return Prepared(
            format="valve-layer",
            source_crs="(positions from the network)",
            feature_count=len(df),
            frames={PipelineValve: df},
            # the network's import lock too (the runner takes it): a re-import of the
            # network and this import take turns, and the re-import moves these valves
            # onto its new pipes (relink_valves)
            extra={"network_dataset": nds, "report": report, "lock_datasets": (nds,)},
        )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        # the runner inserted the batch row in this transaction
        dataset = one_row_sync(
            conn, f"SELECT dataset FROM {table(ImportBatch)} WHERE id = %s", (batch_id,)
        )[0]
        nds = prepared.extra["network_dataset"]
        report: Report = prepared.extra["report"]
        df = prepared.frames[PipelineValve]
        seg = bulk.qualified(PipelineSegment).as_string(conn)
        node = bulk.qualified(PipelineNode).as_string(conn)
        links: dict[str, tuple[int, int, int]] = {}
        by_ends: dict[tuple[str, str], tuple[int, int, int]] = {}
        for sid, source, a, b, a_no, b_no in conn.execute(
            f"SELECT s.id, s.source_id, s.from_node_id, s.to_node_id, na.point_no, "
            f"nb.point_no FROM {seg} s "
            f"JOIN {node} na ON (na.county_code, na.batch_id, na.id) = "
            "(s.county_code, s.batch_id, s.from_node_id) "
            f"JOIN {node} nb ON (nb.county_code, nb.batch_id, nb.id) = "
            "(s.county_code, s.batch_id, s.to_node_id) "
            "WHERE s.dataset = %s",
            (nds,),
        ):
            if source:
                links[source] = (sid, a, b)
            by_ends[(a_no, b_no)] = by_ends[(b_no, a_no)] = (sid, a, b)
        nodes: dict[str, int] = dict(
            conn.execute(f"SELECT point_no, id FROM {node} WHERE dataset = %s", (nds,)).fetchall()
        )
        if not links and not by_ends and not nodes:
            raise ImportFailed(
                f"valves: there is no pipelines dataset {nds!r} to put the "
                "valves on; import the network first (or name it with "
                "--dataset)",
                report,
            )
        seg_ids, node_ids = [], []
        for link, nd, f, r in zip(df["link"], df["node"], df["_file"], df["_row"], strict=True):
            hit = links.get(link)
            if hit is None and "-" in link:
                hit = by_ends.get(tuple(link.split("-", 1)))
            k = nodes.get(nd)
            if hit is None:
                report.error(
                    f, r, "link-unknown", f"link {link!r} is not in pipelines dataset {nds!r}"
                )
            if k is None:
                report.error(
                    f, r, "node-unknown", f"node {nd!r} is not in pipelines dataset {nds!r}"
                )
            if hit is not None and k is not None and k not in hit[1:]:
                report.error(
                    f,
                    r,
                    "node-not-on-link",
                    f"node {nd} is not an end of link "
                    f"{link}: a valve sits on a link next to one of its end nodes",
                )
            seg_ids.append(hit[0] if hit else None)
            node_ids.append(k)
        if report.errors:
            raise ImportFailed(
                f"valves import refused: {len(report.errors)} error(s); nothing was written", report
            )
        valve = bulk.qualified(PipelineValve).as_string(conn)
        cur = conn.execute(
            f"""INSERT INTO {valve} (dataset, valve_no, network_batch_id, segment_id, node_id,
                                     state, geom, batch_id, county_code)
                SELECT %s, u.no, s.batch_id, u.seg, u.node, u.state,
                       {valve_position_sql("s", "u.node")}, %s, s.county_code
                FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[])
                     AS u(no, seg, node, state)
                JOIN {seg} s ON s.id = u.seg AND s.dataset = %s""",
            (
                dataset,
                batch_id,
                df["valve_no"].tolist(),
                seg_ids,
                node_ids,
                df["state"].tolist(),
                nds,
            ),
        )
        return {PipelineValve.__tablename__: cur.rowcount}


def valve_position_sql(segment: str, node_id: str) -> str:
    """SQL for a valve's point on pipe row ``segment``, next to its end ``node_id``:
    VALVE_OFFSET_M along the pipe from that end, or a quarter of a short pipe."""
    f = f"LEAST(0.25, {float(VALVE_OFFSET_M)} / NULLIF(ST_Length({segment}.geom), 0))"
    return (
        f"ST_LineInterpolatePoint({segment}.geom, CASE WHEN {segment}.from_node_id = "
        f"{node_id} THEN {f} ELSE 1 - {f} END)"
    )


def relink_valves(conn: psycopg.Connection, old_batches: list[int], new_batch: int) -> dict:
    """Move the valves on a network's replaced batches onto its new batch, in the import's
    transaction (before the old partitions are dropped): each valve goes to the new pipe with
    the same model link id, else with the same end point numbers, and to the end node with
    the same point number. Valves whose pipe or node is gone are deleted, as before partitions
    (the counts say how many)."""
    if not old_batches:
        return {}
    seg = bulk.qualified(PipelineSegment).as_string(conn)
    node = bulk.qualified(PipelineNode).as_string(conn)
    valve = bulk.qualified(PipelineValve).as_string(conn)
    moved = conn.execute(
        f"""WITH old AS (
                SELECT v.id, s.source_id, na.point_no AS a_no, nb.point_no AS b_no,
                       n.point_no AS node_no
                FROM {valve} v
                JOIN {seg} s ON (s.batch_id, s.id) = (v.network_batch_id, v.segment_id)
                JOIN {node} na ON (na.batch_id, na.id) = (s.batch_id, s.from_node_id)
                JOIN {node} nb ON (nb.batch_id, nb.id) = (s.batch_id, s.to_node_id)
                JOIN {node} n ON (n.batch_id, n.id) = (v.network_batch_id, v.node_id)
                WHERE v.network_batch_id = ANY(%(old)s)),
            target AS (
                SELECT DISTINCT ON (o.id) o.id, s.id AS seg, n.id AS node
                FROM old o
                JOIN {node} n ON n.batch_id = %(new)s AND n.point_no = o.node_no
                JOIN {seg} s ON s.batch_id = %(new)s AND n.id IN (s.from_node_id, s.to_node_id)
                JOIN {node} na ON (na.batch_id, na.id) = (s.batch_id, s.from_node_id)
                JOIN {node} nb ON (nb.batch_id, nb.id) = (s.batch_id, s.to_node_id)
                WHERE s.source_id = o.source_id
                   OR (o.source_id IS NULL AND s.source_id IS NULL
                       AND ((na.point_no, nb.point_no) = (o.a_no, o.b_no)
                            OR (na.point_no, nb.point_no) = (o.b_no, o.a_no)))
                ORDER BY o.id, s.id)
            UPDATE {valve} v SET network_batch_id = %(new)s, segment_id = t.seg,
                   node_id = t.node, geom = {valve_position_sql("s", "t.node")},
                   county_code = s.county_code
            FROM target t JOIN {seg} s ON s.batch_id = %(new)s AND s.id = t.seg
            WHERE v.id = t.id""",
        {"old": old_batches, "new": new_batch},
    ).rowcount
    dropped = conn.execute(
        f"DELETE FROM {valve} WHERE network_batch_id = ANY(%s)", (old_batches,)
    ).rowcount
    return {"pipeline_valve_relinked": moved, "pipeline_valve_dropped": dropped}
