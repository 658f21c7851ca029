"""Which importer handles which kind of data."""

from __future__ import annotations

from cimtwin.importers.base import Importer


def importer_for(kind: str) -> Importer:
    if kind == "grids":
        from cimtwin.importers.grids import GridsImporter

        return GridsImporter()
    if kind == "parcels":
        from cimtwin.importers.parcels import ParcelsImporter

        return ParcelsImporter()
    if kind == "buildings":
        from cimtwin.importers.buildings import BuildingsImporter

        return BuildingsImporter()
    if kind == "components":
        from cimtwin.importers.components import ComponentsImporter

        return ComponentsImporter()
    if kind == "incidents":
        from cimtwin.importers.incidents import IncidentsImporter

        return IncidentsImporter()
    if kind == "pipelines":
        from cimtwin.importers.pipelines import PipelinesImporter

        return PipelinesImporter()
    if kind == "valves":
        from cimtwin.importers.valves import ValvesImporter

        return ValvesImporter()
    raise ValueError(f"unknown import kind {kind!r}")
