"""Which importer handles which kind of data: the one place a new import kind is added.

Each kind names its class as ``"module:Class"``, imported only when that kind is used, so the
command line can list the kinds (its choices come from here) without loading pandas or GDAL.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cimtwin.importers.base import Importer

IMPORTERS: dict[str, str] = {
    "pipelines": "cimtwin.importers.pipelines:PipelinesImporter",
    "components": "cimtwin.importers.components:ComponentsImporter",
    "grids": "cimtwin.importers.grids:GridsImporter",
    "parcels": "cimtwin.importers.parcels:ParcelsImporter",
    "buildings": "cimtwin.importers.buildings:BuildingsImporter",
    "incidents": "cimtwin.importers.incidents:IncidentsImporter",
    "valves": "cimtwin.importers.valves:ValvesImporter",
    "dem": "cimtwin.importers.dem:DemImporter",
    "ifc": "cimtwin.importers.ifc.importer:IfcImporter",
    "oblique": "cimtwin.importers.oblique.importer:ObliqueImporter",
}


def kinds() -> list[str]:
    """The import kinds, in the order the command line lists them."""
    return list(IMPORTERS)


def importer_for(kind: str) -> Importer:
    """A fresh importer for ``kind``; its class is imported on first use."""
    try:
        target = IMPORTERS[kind]
    except KeyError:
        raise ValueError(f"unknown import kind {kind!r} (one of {', '.join(IMPORTERS)})") from None
    module, _, name = target.partition(":")
    cls = getattr(import_module(module), name)
    if cls.kind != kind:
        raise RuntimeError(f"{target} declares kind {cls.kind!r}, registered as {kind!r}")
    return cls()
