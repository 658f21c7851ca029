"""City components (城市部件): class codes against the dictionary, 16-digit ids validated or
generated, and each component put in its work grid by location (进格入块)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import FeatureLabels, LayerBatch, bbox, layer_batches
from cimtwin.importers.report import ERROR, WARNING, Report
from cimtwin.importers.runner import ImportFailed
from cimtwin.importers.sources import text_column
from cimtwin.reference import component_classes
from cimtwin.settings import get_settings
from cimtwin.spatial.city_component import CityComponent
from cimtwin.spatial.provenance import ImportBatch
from cimtwin.spatial.sql_toolkit import identifier, table

ID_PATTERN = r"\d{16}"


def component_id_parts(ids: pd.Series) -> pd.DataFrame:
    """county (6) + class (4: major 2 + minor 2) + sequence (6)."""
    return pd.DataFrame({"county": ids.str[:6], "class_code": ids.str[6:10], "seq": ids.str[10:16]})


ALLOWED = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
TEXT_COLUMNS = (
    "component_id",
    "class_code",
    "name",
    "dept_authority",
    "dept_owner",
    "dept_maintainer",
    "status",
)
#: the order of the checks: a report of batches lists its problems rule by rule in this order,
#: as the report of the whole layer at once did
CHECK_ORDER = (
    "text-encoding-guessed",
    "geometry-missing",
    "geometry-type",
    "geometry-invalid",
    "crs-lonlat-in-projected",
    "crs-axes-swapped",
    "crs-out-of-area",
    "component-class-unknown",
    "component-class-missing",
    "component-id-format",
    "component-id-class",
    "component-id-county",
    "duplicate-id",
)

Batches = Iterator[tuple[pd.DataFrame, np.ndarray]]


class _Ids:
    """What the check of a layer's batches keeps for the checks of the whole layer: each id
    (as an int64 when it is 16 ASCII digits), where it is and its FID; the highest sequence
    per class of the twin's county, for ids made for rows without one."""

    def __init__(self) -> None:
        self.ints: list[np.ndarray] = []
        self.int_at: list[np.ndarray] = []
        self.int_fid: list[np.ndarray] = []
        self.other: list[tuple[int, object, str]] = []  # (position, fid, id)
        self.top: dict[str, int] = {}
        self.missing = 0

    def add(self, cid: pd.Series, good: np.ndarray, fids: np.ndarray, start: int) -> None:
        has = cid.notna().to_numpy()
        self.missing += int((~has).sum())
        digits = good & cid.fillna("").str.isascii().to_numpy(dtype=bool)
        at = np.flatnonzero(digits)
        self.ints.append(cid[digits].astype("int64").to_numpy())
        self.int_at.append(at + start)
        self.int_fid.append(fids[at])
        for i in np.flatnonzero(has & ~digits):
            self.other.append((start + int(i), fids[i], str(cid.iloc[i])))
        county = get_settings().county_code
        own = cid[good]
        own = own[own.str.startswith(county)]
        for code, seq in component_id_parts(own).groupby("class_code")["seq"]:
            self.top[code] = max(self.top.get(code, 0), int(seq.astype(int).max()))

    def report_duplicates(self, label: str, report: Report) -> None:
        ints = np.concatenate(self.ints) if self.ints else np.empty(0, dtype=np.int64)
        twice = pd.Series(ints).duplicated(keep=False).to_numpy()
        others = pd.Series([v for _, _, v in self.other], dtype=object)
        again = others.duplicated(keep=False).to_numpy()
        at = np.concatenate([*self.int_at, np.empty(0, dtype=np.int64)])[twice]
        fids = np.concatenate([*self.int_fid, np.empty(0, dtype=object)])[twice]
        values = np.array([f"{v:016d}" for v in ints[twice]], dtype=object)
        picked = [o for o, d in zip(self.other, again, strict=True) if d]
        at = np.concatenate([at, np.array([p for p, _, _ in picked], dtype=np.int64)])
        fids = np.concatenate([fids.astype(object), np.array([f for _, f, _ in picked], object)])
        values = np.concatenate([values, np.array([v for _, _, v in picked], dtype=object)])
        order = np.argsort(at, kind="stable")
        report.add_many(
            label,
            FeatureLabels(fids[order], values[order]),
            "duplicate-id",
            ERROR,
            [f"component id {v} appears more than once" for v in values[order]],
        )


class ComponentsImporter(CopyWriter):
    kind = "components"
    models = (CityComponent,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        """Checks the layer a batch at a time (CIMTWIN_IMPORT_CHUNK_ROWS), keeping only the ids
        for the checks across batches; the rows are read again, a batch at a time, to write."""
        mark, seen, label, fmt, src = len(report.problems), 0, "", "", ""
        ids, box, stamp = _Ids(), None, _stamp(paths)
        for part in layer_batches(
            paths, "components", ALLOWED, ["class_code"], options, report, key="component_id"
        ):
            label, src = part.layer.label, part.src.to_string()
            fmt = part.layer.path.suffix
            self._check(part, report, ids)
            box = _union(box, bbox(part.geoms))
            seen += len(part.attrs)
        ids.report_duplicates(label, report)
        rank = {rule: i for i, rule in enumerate(CHECK_ORDER)}
        report.problems[mark:] = sorted(
            report.problems[mark:], key=lambda p: rank.get(p.rule, len(rank))
        )
        # 2D storage for components: heights are not surveyed for street furniture
        return Prepared(
            format=fmt.lstrip("."),
            source_crs=src,
            feature_count=seen,
            streams={CityComponent: lambda: self._batches(paths, options, seen, stamp)},
            extra={"generate_ids": ids.missing, "id_top": ids.top},
            bbox=box,
        )

    @staticmethod
    def _frame(attrs: pd.DataFrame, geoms: np.ndarray) -> pd.DataFrame:
        cols = {
            c: (
                text_column(attrs[c], compact=True)
                if c in attrs
                else pd.Series(pd.NA, index=attrs.index, dtype="string")
            )
            for c in TEXT_COLUMNS
        }
        return pd.DataFrame({**cols, "geom": geoms}, index=attrs.index)

    def _check(self, part: LayerBatch, report: Report, seen: _Ids) -> None:
        """The checks of one batch's rows; ids are kept in ``seen`` for the duplicate check."""
        label, ids, frame = part.layer.label, part.ids, self._frame(part.attrs, part.geoms)
        cls = frame["class_code"]
        unknown = (cls.notna() & ~cls.isin(list(component_classes()))).to_numpy()
        report.add_many(
            label,
            ids[unknown],
            "component-class-unknown",
            ERROR,
            [f"class code {v!r} is not in the component class dictionary" for v in cls[unknown]],
        )
        report.add_many(
            label, ids[cls.isna().to_numpy()], "component-class-missing", ERROR, "no class code"
        )
        cid = frame["component_id"]
        has = cid.notna()
        bad = (has & ~cid.fillna("").str.fullmatch(ID_PATTERN)).to_numpy(dtype=bool)
        report.add_many(
            label,
            ids[bad],
            "component-id-format",
            ERROR,
            [f"component id {v!r} is not 16 digits" for v in cid[bad]],
        )
        good = has.to_numpy() & ~bad
        parts = component_id_parts(cid[good].astype(str))
        mism = (
            parts["class_code"].to_numpy(dtype=object)
            != cls[good].fillna("").to_numpy(dtype=object)
        ) & cls[good].notna().to_numpy()
        report.add_many(
            label,
            ids[good][mism],
            "component-id-class",
            ERROR,
            [
                f"id {i} carries class {c} but the class code is {k}"
                for i, c, k in zip(
                    cid[good][mism], parts["class_code"][mism], cls[good][mism], strict=True
                )
            ],
        )
        county = get_settings().county_code
        other = parts["county"].to_numpy() != county
        report.add_many(
            label, ids[good][other], "component-id-county", WARNING, f"id is not in county {county}"
        )
        seen.add(cid, good, np.asarray(part.layer.frame.index), part.start)

    def _batches(
        self, paths: list[Path], options: ImportOptions, count: int, stamp: tuple
    ) -> Batches:
        """The rows again, a batch at a time, as they are written (the problems were
        reported by the check). A file changed since it was checked is refused: its rows
        were not the ones checked."""
        sent = 0
        for part in layer_batches(
            paths, "components", ALLOWED, ["class_code"], options, Report(), key="component_id"
        ):
            if _stamp(paths) != stamp:
                break
            sent += len(part.attrs)
            yield self._frame(part.attrs, part.geoms), part.geoms
        if sent != count or _stamp(paths) != stamp:
            raise ImportFailed(
                f"{paths[0]}: the file changed while it was imported; nothing was written "
                "(import it again once it is complete)"
            )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        if prepared.extra.get("generate_ids"):
            rows = prepared.streams[CityComponent]
            nxt = self._next_sequences(conn, prepared.extra.get("id_top", {}))
            prepared = replace(
                prepared, streams={CityComponent: lambda: self._with_ids(rows(), nxt)}
            )
        return super().write(conn, prepared, batch_id)

    def before_attach(self, model, prepared: Prepared):
        """Component ids are unique across datasets: refuse ids another dataset holds (the
        batches this import replaces do not count)."""
        replacing = list(prepared.extra.get("replacing", []))

        def check(conn: psycopg.Connection, staging) -> None:
            rows = conn.execute(
                psycopg.sql.SQL(
                    "SELECT s.component_id, b.dataset FROM {} s JOIN {} c USING (component_id) "
                    "JOIN {} b ON b.id = c.batch_id WHERE c.batch_id <> ALL(%s) "
                    "LIMIT 5"
                ).format(staging, identifier(CityComponent), identifier(ImportBatch)),
                (replacing,),
            ).fetchall()
            if rows:
                listed = ", ".join(f"{cid} (in {ds})" for cid, ds in rows)
                raise ImportFailed(f"component ids already held by another dataset: {listed}")

        return check

    @staticmethod
    def _next_sequences(conn: psycopg.Connection, top: dict[str, int]) -> dict[str, int]:
        """The next free sequence per class: after the twin's ids and the file's."""
        county = get_settings().county_code
        taken: dict[str, int] = dict(
            conn.execute(
                f"SELECT substr(component_id, 7, 4), max(substr(component_id, 11, 6)::int) "
                f"FROM {table(CityComponent)} WHERE component_id LIKE %s GROUP BY 1",
                (county + "%",),
            ).fetchall()
        )
        for code, seq in top.items():
            taken[code] = max(taken.get(code, 0), seq)
        return {code: seq + 1 for code, seq in taken.items()}

    @staticmethod
    def _with_ids(batches: Batches, nxt: dict[str, int]) -> Batches:
        """Ids for components delivered without one: the next free sequence per class, in
        file order."""
        county = get_settings().county_code
        for frame, geoms in batches:
            missing = frame["component_id"].isna()
            if missing.any():
                for code, idx in (
                    frame.index[missing.to_numpy()].groupby(frame["class_code"][missing]).items()
                ):
                    start = nxt.get(code, 1)
                    nxt[code] = start + len(idx)
                    frame.loc[idx, "component_id"] = [
                        f"{county}{code}{s:06d}" for s in range(start, start + len(idx))
                    ]
            yield frame, geoms


def _stamp(paths: list[Path]) -> tuple:
    """Size and modification time of the files (and a Shapefile's sidecars)."""
    out = []
    for p in paths:
        for part in [p, *(p.with_suffix(s) for s in (".dbf", ".shx"))]:
            if part.exists():
                st = part.stat()
                out.append((str(part), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
