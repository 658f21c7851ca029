"""What every importer provides, and the options a surveyor passes on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
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


class CopyWriter:
    """``write`` for importers whose prepared frames go straight into their tables.

    Frames whose model has a ``grid_code`` column get it by location (进格入块) from the work
    grids in the database, inside the import's transaction; the shapely geometries for that are
    in ``prepared.extra['shapes'][model]``.
    """

    models: ClassVar[tuple[type[Base], ...]]

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        from cimtwin.spatial import bulk
        from cimtwin.spatial.admin_grid import GridIndex

        counts: dict[str, int] = {}
        shapes = prepared.extra.get("shapes", {})
        grids = None
        for model in self.models:
            df = prepared.frames.get(model)
            if df is None:
                continue
            df = df.assign(batch_id=batch_id)
            hook = None
            if "grid_code" in table_of(model).columns and model in shapes:
                grids = grids or GridIndex.load(conn)
                df = df.assign(grid_code=None)
                hook = _grid_codes(grids, np.asarray(shapes[model], dtype=object))
            if bulk.is_partitioned(model):
                counts[model.__tablename__] = bulk.load_partition(
                    conn, model, df, batch_id, self.before_attach(model, prepared), hook
                )
            else:
                counts[model.__tablename__] = bulk.copy_frame(conn, model, df, chunk_hook=hook)
            if hook is not None:
                counts[f"{model.__tablename__}_outside_grids"] = hook.outside
        return counts

    def before_attach(self, model: type[Base], prepared: Prepared):
        """A check to run on a new partition before it joins the table (None: no check)."""
        return None


class _grid_codes:
    """A COPY chunk hook: each chunk's work grids by location, found while the previous chunk
    is on its way to the server; counts the rows outside every grid."""

    def __init__(self, grids: Any, shapes: np.ndarray) -> None:
        self.grids, self.shapes, self.outside = grids, shapes, 0

    def __call__(self, chunk: pd.DataFrame, start: int) -> pd.DataFrame:
        codes = self.grids.assign(self.shapes[start : start + len(chunk)])
        self.outside += int(sum(c is None for c in codes))
        return chunk.assign(grid_code=codes)
