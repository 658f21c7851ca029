"""What every importer provides, and the options a surveyor passes on the command line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pandas as pd
import psycopg

from cimtwin.importers.report import Report
from cimtwin.spatial.base import Base, table_of


@dataclass
class ImportOptions:
    crs: str | None = None  # overrides / supplies the source CRS
    network: str | None = None  # CJJ 61 network code for single-network files
    mapping: Path | None = None  # extra column-name aliases (YAML)
    dry_run: bool = False
    strict: bool = False  # warnings fail the import too
    replace: bool = False  # re-import unchanged files; replace a dataset from other files
    dataset: str | None = None  # replace key; default from kind and file name
    local_transform: str | None = None  # 4-parameter similarity "dx,dy,rot_arcsec,scale_ppm"
    from_gcj02: bool = False  # lon/lat from a Chinese web map (GCJ-02): convert to WGS 84
    allow_empty: bool = False  # an import without features may empty the dataset
    imported_by: str = "cimtwin"
    # ifc: placement and the building the model belongs to; oblique: where a production
    # without metadata.xml lies
    building: str | None = None  # --building CODE
    origin: str | None = None  # ifc: --origin LON,LAT,H; oblique: X,Y,Z (SRSOrigin, in --crs)
    rotation: float | None = None  # --rotation DEG
    height_datum: str | None = None  # --height-datum 1985|geoid|ellipsoidal
    #: ``progress(description, total) -> advance(n)`` for long steps (the CLI's bars)
    progress: Any = field(default=None, repr=False, compare=False)


@dataclass
class Prepared:
    """Validated rows ready to write: one DataFrame per table, geometries as shapely
    geometries (or hex EWKB), made into EWKB a chunk at a time by the COPY."""

    format: str
    source_crs: str
    feature_count: int
    frames: dict[type[Base], pd.DataFrame] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    bbox: tuple[float, float, float, float] | None = None  # storage CRS, for cache invalidation
    #: tables whose rows are read from the source as they are written, a batch at a time:
    #: each call gives (frame, storage geometries) batches (see :meth:`CopyWriter.write`)
    streams: dict[type[Base], Callable[[], Iterator[tuple[pd.DataFrame, Any]]]] = field(
        default_factory=dict
    )
    #: the rows are checked as they are streamed (the file read once): the report, the count
    #: and the extent are complete only once they are staged, and the runner's verdict
    #: (``extra["verdict"]``) is taken then, before their indexes are built
    checked_in_stream: bool = False


class Progress(Protocol):
    def __call__(self, description: str, total: int | None = None) -> Any: ...


class Importer(Protocol):
    # read-only members: an importer declares them as class attributes of narrower types,
    # e.g. ``models = (PipelineValve,)``
    @property
    def kind(self) -> str:
        """The import kind this importer is registered under."""

    @property
    def models(self) -> tuple[type[Base], ...]:
        """Tables this importer writes, parents first (deleted in reverse order on replace)."""

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        """Read and validate; add every problem to ``report``; touch no database table."""

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        """Write ``prepared`` inside the caller's transaction; return row counts per table."""


#: what a table's written rows keep for the tables written after it (:meth:`county_codes`)
WRITTEN_KEYS = ("id", "county_code")


class CopyWriter:
    """``write`` for importers whose prepared frames go straight into their tables.

    Frames whose model has a ``grid_code`` column get it by location (进格入块) from the work
    grids in the database, inside the import's transaction; the shapely geometries for that are
    in ``prepared.extra['shapes'][model]``. Frames whose model has the district key
    ``county_code`` get it from their grid code (:mod:`cimtwin.spatial.county`), or from
    :meth:`county_codes` for tables placed by the rows they belong to.
    """

    models: ClassVar[tuple[type[Base], ...]]
    #: columns a streamed table's rows may be sent without; filled before the attach
    streamed_nullable: ClassVar[tuple[str, ...]] = ()

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        from cimtwin.spatial import bulk, staging

        # partitions are staged one after the other (each COPY starts while the indexes of
        # the one before build) and attached at the end, in the same order
        staged: list[tuple[staging.StagedPartition, Any]] = []
        if any(bulk.is_partitioned(m) for m in self.models):
            staging.claim(conn, batch_id)
        try:
            counts = self._write_models(conn, prepared, batch_id, staged)
            for part, check in staged:
                part.attach(conn, check)
        finally:
            for part, _ in staged:
                part.close()
        return counts

    def _write_models(
        self, conn: psycopg.Connection, prepared: Prepared, batch_id: int, staged: list
    ) -> dict[str, int]:
        """COPY every table: plain ones in the transaction, partitioned ones staged (added to
        ``staged`` with the check to run before their attach)."""
        from cimtwin.spatial import bulk, staging
        from cimtwin.spatial.admin_grid import GridIndex
        from cimtwin.spatial.county import CountyPlacement

        counts: dict[str, int] = {}
        shapes = prepared.extra.get("shapes", {})
        written: dict[type[Base], pd.DataFrame] = {}
        grids = None
        placement = None
        for model in self.models:
            if model in prepared.streams:
                counts.update(self._write_stream(conn, model, prepared, batch_id, staged))
                continue
            # handed over: a table's rows are let go once sent (a pipe network's nodes were
            # held through the COPY of its pipes)
            df = prepared.frames.pop(model, None)
            if df is None:
                continue
            df = df.assign(batch_id=batch_id)
            if "grid_code" in table_of(model).columns and model in shapes:
                grids = grids or GridIndex.load(conn)
                df["grid_code"] = grids.assign(shapes[model])
                counts[f"{model.__tablename__}_outside_grids"] = int(df["grid_code"].isna().sum())
            if "county_code" in table_of(model).columns:
                placement = placement or CountyPlacement.load(conn, grids)
                df["county_code"] = self._counties(
                    conn, model, df, written, placement, batch_id, shapes.get(model)
                )
            if bulk.is_partitioned(model):
                part = staging.stage(conn, model, df, batch_id)
                staged.append((part, self.before_attach(model, prepared)))
                counts[model.__tablename__] = part.rows
            else:
                counts[model.__tablename__] = bulk.copy_frame(conn, model, df)
            written[model] = df[[c for c in WRITTEN_KEYS if c in df.columns]]
            del df
        return counts

    def _write_stream(
        self,
        conn: psycopg.Connection,
        model: type[Base],
        prepared: Prepared,
        batch_id: int,
        staged: list,
    ) -> dict[str, int]:
        """A streamed table's batches, each given its grid and county codes, COPYed into its
        new partition one after the other: one batch of rows is held at a time."""
        from cimtwin.spatial import bulk, staging
        from cimtwin.spatial.admin_grid import GridIndex
        from cimtwin.spatial.county import (
            CountyPlacement,
            StreamedCounties,
            batch_files,
            counties_of,
            feature_names,
        )

        if not bulk.is_partitioned(model):
            raise TypeError(f"{model.__tablename__}: only partitioned tables are streamed")
        columns = table_of(model).columns
        grids = GridIndex.load(conn) if "grid_code" in columns else None
        counties = None
        if "county_code" in columns:
            counties = StreamedCounties(
                CountyPlacement.load(conn, grids),
                f"{batch_files(conn, batch_id)}: {model.__tablename__}",
            )
        outside = 0

        def frames() -> Iterator[pd.DataFrame]:
            nonlocal outside
            for frame, shapes in prepared.streams[model]():
                df = frame.assign(batch_id=batch_id)
                if grids is not None:
                    df["grid_code"] = grids.assign(shapes)
                    outside += int(df["grid_code"].isna().sum())
                if counties is not None:
                    placed = (
                        counties_of(df["grid_code"].to_numpy())
                        if grids is not None
                        else counties.placement.at(shapes)
                    )
                    df["county_code"] = counties.batch(placed, feature_names(df))
                yield df

        check = self.before_attach(model, prepared)

        def finish(conn: psycopg.Connection, table) -> None:
            if counties is not None:
                counties.finish(conn, model, table)
            if check:
                check(conn, table)

        part = staging.stage(
            conn,
            model,
            frames(),
            batch_id,
            # a stream checked as it is read: the runner's verdict once all rows are in,
            # before the indexes are built and anything is attached
            copied=prepared.extra.get("verdict") if prepared.checked_in_stream else None,
            nullable=(
                *self.streamed_nullable,
                *(("county_code",) if counties is not None and counties.defers else ()),
            ),
        )
        staged.append((part, finish))
        out = {model.__tablename__: part.rows}
        if grids is not None:
            out[f"{model.__tablename__}_outside_grids"] = outside
        return out

    def county_codes(
        self, model: type[Base], frame: pd.DataFrame, written: dict[type[Base], pd.DataFrame]
    ) -> Any:
        """The county of each row of a table without a grid code, from rows written before
        it in this import (``written``: their :data:`WRITTEN_KEYS`, e.g. a pipe's from-node's
        id and county); None: not placed here."""
        return None

    def _counties(self, conn, model, df, written, placement, batch_id: int, shapes) -> Any:
        from cimtwin.spatial.county import batch_files, counties_of, feature_names

        if "grid_code" in df.columns:
            counties = counties_of(df["grid_code"].to_numpy())
        elif (counties := self.county_codes(model, df, written)) is None:
            if shapes is None:
                raise TypeError(f"{self.__class__.__name__} does not place {model.__tablename__}")
            counties = placement.at(shapes)
        where = f"{batch_files(conn, batch_id)}: {model.__tablename__}"
        return placement.complete(counties, where, feature_names(df))

    def before_attach(self, model: type[Base], prepared: Prepared):
        """A check to run on a new partition before it joins the table (None: no check)."""
        return None
