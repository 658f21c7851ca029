"""City components (城市部件): class codes against the dictionary, 16-digit ids validated or
generated, and each component put in its work grid by location (进格入块)."""

from __future__ import annotations

from collections.abc import Iterator
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
from cimtwin.spatial.sql_toolkit import identifier

ID_PATTERN = r"\d{16}"
#: the last of the 6-digit sequence numbers of a class in a county
SEQ_MAX = 999_999


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
    (as an int64 when it is 16 ASCII digits), where it is and its FID, and how many rows
    have none (they are given one once written, :meth:`ComponentsImporter._generate_ids`)."""

    def __init__(self) -> None:
        self.ints: list[np.ndarray] = []
        self.int_at: list[np.ndarray] = []
        self.int_fid: list[np.ndarray] = []
        self.other: list[tuple[int, object, str]] = []  # (position, fid, id)
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

    #: written NULL for rows the file gives no id, given one before the attach
    streamed_nullable = ("component_id",)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        """The file is read once, a batch at a time (CIMTWIN_IMPORT_CHUNK_ROWS): each batch
        is checked and, while the checks pass, written to the staged partition. The report
        and the count are complete when the last batch is staged; the runner refuses the
        import there, before the staged rows are indexed, if they fail (they are dropped).
        A dry run only checks. Storage is 2D: heights are not surveyed for street furniture."""
        prepared = Prepared(format="", source_crs="", feature_count=0, checked_in_stream=True)
        if options.dry_run:
            for _ in self._checked(paths, options, report, prepared):
                pass
            prepared.checked_in_stream = False
            return prepared
        checked = self._checked(paths, options, report, prepared)
        # the first batch now: a file that cannot be read, or has no rows, is refused before
        # the import connects, as every other import's is
        first = next(checked, None)

        def batches() -> Batches:
            if first is not None:
                yield first
            yield from checked

        prepared.streams[CityComponent] = batches
        return prepared

    def _checked(
        self, paths: list[Path], options: ImportOptions, report: Report, prepared: Prepared
    ) -> Batches:
        """Every batch checked; each sent on while no check has failed (after that the rest
        is still checked, for the report, but nothing more is sent). Fills ``prepared``'s
        count, format, CRS and extent as it goes."""
        mark, label, ids, box = len(report.problems), "", _Ids(), None
        for part in layer_batches(
            paths, "components", ALLOWED, ["class_code"], options, report, key="component_id"
        ):
            label = part.layer.label
            prepared.format = part.layer.path.suffix.lstrip(".")
            prepared.source_crs = part.src.to_string()
            frame = self._check(part, report, ids)
            box = _union(box, bbox(part.geoms))
            prepared.feature_count += len(part.attrs)
            if not report.failed(options.strict):
                yield frame, part.geoms
        ids.report_duplicates(label, report)
        rank = {rule: i for i, rule in enumerate(CHECK_ORDER)}
        report.problems[mark:] = sorted(
            report.problems[mark:], key=lambda p: rank.get(p.rule, len(rank))
        )
        prepared.bbox = box
        prepared.extra["generate_ids"] = ids.missing

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

    def _check(self, part: LayerBatch, report: Report, seen: _Ids) -> pd.DataFrame:
        """The checks of one batch's rows, which it returns as they are written; ids are kept
        in ``seen`` for the duplicate check."""
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
        return frame

    def before_attach(self, model, prepared: Prepared):
        """Component ids are unique across datasets: refuse ids another dataset holds (the
        batches this import replaces do not count)."""
        replacing = list(prepared.extra.get("replacing", []))

        def check(conn: psycopg.Connection, staging) -> None:
            if prepared.extra.get("generate_ids"):
                _generate_ids(conn, staging)
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


def _generate_ids(conn: psycopg.Connection, staging: psycopg.sql.Composable) -> None:
    """Ids for the staged components the file gave none: the next free sequences per class
    of the twin's county, after the twin's ids and the file's, in file order (the order of
    the serial ``id`` the COPY gave the rows)."""
    county = get_settings().county_code
    like = county + "%"
    top = psycopg.sql.SQL(
        "SELECT substr(component_id, 7, 4) AS code, max(substr(component_id, 11, 6)::int) AS seq "
        "FROM (SELECT component_id FROM {t} WHERE component_id LIKE %(like)s UNION ALL "
        "SELECT component_id FROM {s} WHERE component_id LIKE %(like)s) ids GROUP BY 1"
    ).format(t=identifier(CityComponent), s=staging)
    need = psycopg.sql.SQL(
        "SELECT n.id, n.class_code, coalesce(top.seq, 0) + n.k AS seq FROM "
        "(SELECT id, class_code, row_number() OVER (PARTITION BY class_code ORDER BY id) AS k "
        "FROM {s} WHERE component_id IS NULL) n LEFT JOIN ({top}) top ON top.code = n.class_code"
    ).format(s=staging, top=top)
    full = conn.execute(
        psycopg.sql.SQL(
            "SELECT class_code, max(seq) FROM ({}) x GROUP BY 1 HAVING max(seq) > %(most)s"
        ).format(need),
        {"like": like, "most": SEQ_MAX},
    ).fetchall()
    if full:
        listed = ", ".join(code for code, _ in full)
        raise ImportFailed(
            f"no free component id left in county {county} for class(es) {listed} "
            f"(sequences end at {SEQ_MAX}); nothing was written"
        )
    conn.execute(
        psycopg.sql.SQL(
            "UPDATE {s} c SET component_id = "
            "%(county)s || g.class_code || lpad(g.seq::text, 6, '0') "
            "FROM ({need}) g WHERE c.id = g.id"
        ).format(s=staging, need=need),
        {"like": like, "county": county},
    )


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
