"""The list of 3D tilesets: id -> ``"module:Class"`` of its Source, imported only when built.

A new source is one module in :mod:`.sources` and one line here; ``build-3d --layers`` takes
its choices from this list, in this order. Entries whose module is not there yet (another
branch) are skipped by :func:`available`, so the list can name every planned tileset.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec

import psycopg

from cimtwin.errors import UserError
from cimtwin.tiles.threed.sources.base import Source

TILESETS: dict[str, str] = {
    "terrain": "cimtwin.tiles.threed.sources.terrain:TerrainSource",
    "buildings": "cimtwin.tiles.threed.sources.buildings:BuildingsSource",
    "underground": "cimtwin.tiles.threed.sources.underground:UndergroundSource",
    "pipelines": "cimtwin.tiles.threed.sources.pipelines:PipelinesSource",
    "pipeline_points": "cimtwin.tiles.threed.sources.pipeline_points:PipelinePointsSource",
    "components": "cimtwin.tiles.threed.sources.components:ComponentsSource",
}
#: families of tilesets, one per imported item (a BIM model): name -> ``module:function``
#: listing ``(tileset id, target)`` from the database; a target ``module:Class#ARG`` makes
#: ``Class(ARG)``
FAMILIES: dict[str, str] = {
    "bim": "cimtwin.tiles.threed.sources.bim:model_tilesets",
}
#: tilesets an import writes from its source files (not from the database), rebuilt by
#: running that import again: name -> ``module:function(database_url, folder, *, area,
#: changed, progress, warn) -> list[BuildResult]`` (oblique: one tileset per production)
REIMPORTED: dict[str, str] = {
    "oblique": "cimtwin.importers.oblique.rebuild:rebuild",
}


def ids() -> list[str]:
    """Every tileset id and family name, in build order."""
    return [*TILESETS, *FAMILIES, *REIMPORTED]


def family_members(name: str, conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(tileset id, target) of each member of the family ``name``, from the database."""
    module, _, func = FAMILIES[name].partition(":")
    return list(getattr(import_module(module), func)(conn))


def rebuilder(name: str) -> Callable[..., list]:
    """The function that rebuilds the reimported tilesets ``name`` (:data:`REIMPORTED`)."""
    module, _, func = REIMPORTED[name].partition(":")
    return getattr(import_module(module), func)


def _module_exists(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available() -> list[str]:
    """The ids (and family names) whose source module exists in this installation (the
    builder's; :data:`REIMPORTED` names are not among them)."""
    return [k for k, t in {**TILESETS, **FAMILIES}.items() if _module_exists(t)]


def target_for(tileset_id: str) -> str:
    """The ``module:Class`` of a tileset; a one-line UserError for an unknown or absent one."""
    known = {**TILESETS, **FAMILIES, **REIMPORTED}
    if tileset_id not in known:
        raise UserError(f"unknown 3D layer {tileset_id!r} (one of {', '.join(known)})")
    target = known[tileset_id]
    if not _module_exists(target):
        raise UserError(f"3D layer {tileset_id!r}: its source {target} is not installed")
    return target


def source_for(target: str) -> Source:
    """A fresh Source instance from ``module:Class`` (or ``module:Class#ARG``: ``Class(ARG)``)."""
    module, _, rest = target.partition(":")
    name, hashed, arg = rest.partition("#")
    cls = getattr(import_module(module), name)
    return cls(arg) if hashed else cls()
