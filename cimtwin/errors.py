"""The one exception hierarchy of cimtwin.

Every error whose message is for the person who asked derives from :class:`CimtwinError`, by
kind: bad input, an id that does not exist, a change the stored state refuses, a service that
cannot answer now. The kinds say nothing of HTTP: ``cimtwin/api/errors.py`` maps each kind to
its status in one table, and the CLI prints any of them as one line without a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import PoolTimeout

if TYPE_CHECKING:
    from cimtwin.importers.report import Report


class CimtwinError(Exception):
    """An error the caller is told about in words; the message says what and where."""


class InputError(CimtwinError):
    """Input the service cannot answer as asked: a parameter, a request, a file."""


class NotFoundError(CimtwinError):
    """An id, code or name that is not in the twin."""


class ConflictError(CimtwinError):
    """A change the stored state does not allow (a workflow step, a taken id)."""


class UnavailableError(CimtwinError):
    """The service cannot answer now (a query over its time, a database away)."""


class UserError(InputError):
    """Bad input or configuration given on the command line; the CLI prints it and exits 2."""


class ImportFailed(UserError):
    """Validation or writing failed; the database is unchanged. ``report`` holds what was
    found before it stopped."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class CQL2Error(InputError):
    """A CQL2 filter that cannot be parsed or does not fit the collection; ``position`` is the
    1-based character the message points at (CQL2-text) or the JSON Pointer of the member
    (CQL2-JSON; "" for the whole document)."""

    def __init__(self, message: str, position: int | str | None = None) -> None:
        self.message = message
        self.position = position
        if position is None:
            full = message
        elif isinstance(position, int):
            full = f"{message} at position {position}"
        else:
            full = f"{message} at {position or 'the top of the JSON filter'}"
        super().__init__(full)


class SourceError(InputError):
    """A source file an importer cannot read (broken, truncated, of an unsupported kind)."""


class IfcReadError(SourceError):
    """An IFC file IfcOpenShell cannot read."""


class OsgbError(SourceError):
    """An oblique-photography tile (OSGB, or OBJ) that cannot be read."""


class GeorefError(InputError):
    """A georeference that is missing, contradictory or places the model nowhere on the globe
    (IFC map conversions, oblique SRS/origin, --origin and --crs options)."""


class DatabaseUnavailable(UnavailableError, PoolTimeout):
    """The database refuses connections: no use waiting for one.

    Also a ``PoolTimeout``, so whatever handles the pool's timeouts (the replica fallback)
    handles this too.
    """
