"""The list of 3D tilesets: id -> ``"module:Class"`` of its Source, imported only when built.

A new source is one module in :mod:`.sources` and one line here; ``build-3d --layers`` takes
its choices from this list, in this order. Entries whose module is not there yet (another
branch) are skipped by :func:`available`, so the list can name every planned tileset.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

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


def ids() -> list[str]:
    """Every tileset id, in build order."""
    return list(TILESETS)


def _module_exists(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available() -> list[str]:
    """The ids whose source module exists in this installation."""
    return [k for k, t in TILESETS.items() if _module_exists(t)]


def target_for(tileset_id: str) -> str:
    """The ``module:Class`` of a tileset; a one-line UserError for an unknown or absent one."""
    if tileset_id not in TILESETS:
        raise UserError(f"unknown 3D layer {tileset_id!r} (one of {', '.join(TILESETS)})")
    target = TILESETS[tileset_id]
    if not _module_exists(target):
        raise UserError(f"3D layer {tileset_id!r}: its source {target} is not installed")
    return target


def source_for(target: str) -> Source:
    """A fresh Source instance from ``module:Class``."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)()
