"""City components (城市部件): class codes against the dictionary, 16-digit ids validated or
generated, and each component put in its work grid by location (进格入块)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg

from cimtwin.importers.base import CopyWriter, ImportOptions, Prepared
from cimtwin.importers.layers import bbox, single_layer
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


class ComponentsImporter(CopyWriter):
    kind = "components"
    models = (CityComponent,)

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        layer, attrs, geoms, src, ids = single_layer(
            paths,
            "components",
            ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"),
            ["class_code"],
            options,
            report,
            key="component_id",
        )
        label = layer.label
        for col in (
            "component_id",
            "class_code",
            "name",
            "dept_authority",
            "dept_owner",
            "dept_maintainer",
            "status",
        ):
            attrs[col] = (
                text_column(attrs[col], compact=True)
                if col in attrs
                else pd.Series(pd.NA, index=attrs.index, dtype="string")
            )
        cls = attrs["class_code"]
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
        cid = attrs["component_id"]
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
        dup = (cid.duplicated(keep=False) & has).to_numpy()
        report.add_many(
            label,
            ids[dup],
            "duplicate-id",
            ERROR,
            [f"component id {v} appears more than once" for v in cid[dup]],
        )
        frame = pd.DataFrame(
            {
                "component_id": cid,
                "class_code": cls,
                "name": attrs["name"],
                "dept_authority": attrs["dept_authority"],
                "dept_owner": attrs["dept_owner"],
                "dept_maintainer": attrs["dept_maintainer"],
                "status": attrs["status"],
                "geom": geoms,  # EWKB a chunk at a time, by the COPY
            },
            index=attrs.index,
        )
        # 2D storage for components: heights are not surveyed for street furniture
        return Prepared(
            format=layer.path.suffix.lstrip("."),
            source_crs=src.to_string(),
            feature_count=len(frame),
            frames={CityComponent: frame},
            extra={"shapes": {CityComponent: geoms}, "generate_ids": int((~has).sum())},
            bbox=bbox(geoms),
        )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        if prepared.extra.get("generate_ids"):
            self._generate_ids(conn, prepared.frames[CityComponent])
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
    def _generate_ids(conn: psycopg.Connection, frame: pd.DataFrame) -> None:
        """Ids for components delivered without one: the next free sequence per class."""
        county = get_settings().county_code
        taken: dict[str, int] = dict(
            conn.execute(
                f"SELECT substr(component_id, 7, 4), max(substr(component_id, 11, 6)::int) "
                f"FROM {table(CityComponent)} WHERE component_id LIKE %s GROUP BY 1",
                (county + "%",),
            ).fetchall()
        )
        ids = frame["component_id"]
        have = ids.dropna()
        have = have[have.str.startswith(county)]
        for code, seq in component_id_parts(have).groupby("class_code")["seq"]:
            taken[code] = max(taken.get(code, 0), int(seq.astype(int).max()))
        missing = ids.isna()
        for code, idx in (
            frame.index[missing.to_numpy()].groupby(frame["class_code"][missing]).items()
        ):
            start = taken.get(code, 0) + 1
            frame.loc[idx, "component_id"] = [
                f"{county}{code}{s:06d}" for s in range(start, start + len(idx))
            ]
