"""The district key of imported rows: which county (GB/T 2260, 6 digits) each row belongs to.

Every big table carries ``county_code`` (:mod:`cimtwin.db.layout`), the column a Citus
cluster distributes by. A row with a work grid takes its grid's county. A row outside every
grid takes the county of the batch it arrives in when the batch's placed rows all lie in
one, else the twin's own when the twin knows only one (its grids', or
``CIMTWIN_COUNTY_CODE`` before any grid is imported). Anything else cannot be placed, and
the import stops naming the file and the features rather than store a row no node owns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg

from cimtwin.db.layout import COUNTY_DIGITS
from cimtwin.errors import ImportFailed
from cimtwin.settings import get_settings
from cimtwin.spatial.admin_grid import GridIndex
from cimtwin.spatial.provenance import ImportBatch
from cimtwin.spatial.sql_toolkit import table

#: columns that name a feature in an error, most telling first
FEATURE_KEYS = ("building_code", "parcel_code", "component_id", "point_no", "external_id")
#: features listed by name in an error (the count says how many in all)
LISTED = 5


def counties_of(grid_codes: Sequence[str | None] | np.ndarray) -> np.ndarray:
    """The county of each grid code (its first six digits); None where there is none.

    Worked out once per distinct code (a district's 500 000 components lie in 1 700 grids):
    slicing every row's string took a sixth of a second."""
    index, distinct = pd.factorize(np.asarray(grid_codes, dtype=object), use_na_sentinel=True)
    counties = np.array(
        [str(c)[:COUNTY_DIGITS] if isinstance(c, str) and c else None for c in distinct]
        + [None],  # the last: what -1 (no code) takes
        dtype=object,
    )
    return counties[index]


class CountyPlacement:
    """Places rows in counties with the twin's work grids, inside an import's transaction."""

    def __init__(self, grids: GridIndex, configured: str) -> None:
        self.grids = grids
        self.known = sorted({str(c)[:COUNTY_DIGITS] for c in grids.codes}) or [configured]
        # the twin's one county, when it has one: its grids', or the configured one
        self.only: str | None = self.known[0] if len(self.known) == 1 else None

    @classmethod
    def load(cls, conn: psycopg.Connection, grids: GridIndex | None = None) -> CountyPlacement:
        return cls(grids if grids is not None else GridIndex.load(conn), get_settings().county_code)

    def at(self, geoms: Sequence | np.ndarray) -> np.ndarray:
        """The county of each shapely geometry's grid; None outside every grid."""
        return counties_of(self.grids.assign(geoms))

    def complete(self, counties: np.ndarray, where: str, names: Sequence[str]) -> np.ndarray:
        """``counties`` with every None filled (the batch's county, else the twin's one);
        :class:`ImportFailed` naming ``where`` and the features ``names`` when that fails."""
        out = np.asarray(counties, dtype=object).copy()
        missing = pd.isna(out)
        if not missing.any():
            return out
        placed = sorted({c for c in out[~missing]})
        fill = placed[0] if len(placed) == 1 else self.only
        if fill is None:
            lost = [str(names[i]) for i in np.flatnonzero(missing)[:LISTED]]
            raise self.unplaced(where, lost, int(missing.sum()), placed)
        out[missing] = fill
        return out

    def unplaced(self, where: str, lost: list[str], count: int, placed: list[str]) -> ImportFailed:
        """The error for ``count`` rows (the first of them named in ``lost``) that no county
        can be given to."""
        more = f" and {count - len(lost)} more" if count > len(lost) else ""
        spans = f"counties {', '.join(placed)}" if placed else "no county"
        return ImportFailed(
            f"{where}: feature(s) {', '.join(lost)}{more} lie outside every work grid, and "
            f"the import spans {spans} of the twin's {', '.join(self.known)}, so no "
            "district (county_code) can be given to them; nothing was written (import "
            "the work grids that hold them, or import each district's features apart)"
        )


class StreamedCounties:
    """:meth:`CountyPlacement.complete` for an import written a batch at a time, with the
    answer of the whole import: a row outside every grid takes the county of all the import's
    placed rows, which a batch alone does not know. Rows of a batch before any placed row
    are sent without a county (:attr:`defers`) and given it in :meth:`finish`."""

    def __init__(self, placement: CountyPlacement, where: str) -> None:
        self.placement, self.where = placement, where
        self.placed: set[str] = set()
        self.lost: list[str] = []  # the first unplaced rows, by name
        self.missing = self.deferred = 0

    @property
    def defers(self) -> bool:
        """Rows may be sent without a county: the twin spans several counties."""
        return self.placement.only is None

    def _fill(self) -> str | None:
        if self.placement.only is not None:
            return self.placement.only
        return next(iter(self.placed)) if len(self.placed) == 1 else None

    def batch(self, counties: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """One batch's counties, filled where the import so far tells (else None)."""
        out = np.asarray(counties, dtype=object).copy()
        missing = pd.isna(out)
        self.placed.update(str(c) for c in set(out[~missing]))
        if missing.any():
            room = max(LISTED - len(self.lost), 0)
            self.lost += [str(names[i]) for i in np.flatnonzero(missing)[:room]]
            self.missing += int(missing.sum())
            fill = self._fill()
            out[missing] = fill
            if fill is None:
                self.deferred += int(missing.sum())
        return out

    def finish(self, conn: psycopg.Connection, model, staging) -> None:
        """Fill the rows sent without a county, or refuse the import as
        :meth:`CountyPlacement.complete` would have."""
        if not self.missing:
            return
        fill = self._fill()
        if fill is None:
            raise self.placement.unplaced(self.where, self.lost, self.missing, sorted(self.placed))
        if self.deferred:
            from cimtwin.spatial import bulk

            bulk.fill_nulls(conn, model, staging, "county_code", fill)


class FeatureNames(Sequence[str]):
    """What to call each row of an import frame in an error: its code, else its row number.

    Named only when asked (an error names at most :data:`LISTED`): the whole list, made for
    every table an import writes, was 400 000 strings for a district's pipe network."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._column = next((frame[c] for c in FEATURE_KEYS if c in frame.columns), None)
        self._len = len(frame)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):  # positions (and slices), as the callers use
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._len))]
        k = int(i)
        if not -self._len <= k < self._len:
            raise IndexError(i)
        k %= self._len
        return f"row {k + 1}" if self._column is None else str(self._column.iloc[k])


def feature_names(frame: pd.DataFrame) -> FeatureNames:
    """:class:`FeatureNames` of ``frame``'s rows."""
    return FeatureNames(frame)


def batch_files(conn: psycopg.Connection, batch_id: int) -> str:
    """The source files of an import batch, for an error message."""
    row = conn.execute(
        f"SELECT source_files FROM {table(ImportBatch)} WHERE id = %s", (batch_id,)
    ).fetchone()
    return ", ".join(row[0]) if row and row[0] else f"import batch {batch_id}"
