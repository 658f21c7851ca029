"""The real buildings source with small leaves, so the sample's 255 buildings make a tree
(the incremental test needs tiles that a one-grid change does not touch)."""

from __future__ import annotations

from cimtwin.tiles.threed.sources.buildings import BuildingsSource


class SmallTileBuildings(BuildingsSource):
    max_features_per_tile = 20
