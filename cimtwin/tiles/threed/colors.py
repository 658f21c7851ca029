"""Colours of the 3D solids: buildings by use, underground structures by kind.

A building's ``use`` is a word (residential, office, ...), the land-use class of the parcel it
serves; its colour is that class's colour in the GB 50137-2011 land-use dictionary shipped in
:mod:`cimtwin.reference` (``land_use_gb50137.csv``), so the 3D view reads like the planning
map. The map from use to land-use code is :data:`USE_LANDUSE`; a use it does not know is
:data:`UNKNOWN`. Underground parts of buildings are the same colour darkened by
:data:`UNDERGROUND_SHADE`; underground structures have their own palette
(:data:`UNDERGROUND_KIND`), since no dictionary colours them.
"""

from __future__ import annotations

from functools import lru_cache

from cimtwin.reference import read_rows

RGBA = tuple[int, int, int, int]

#: building use -> GB 50137 land-use code whose colour it takes
USE_LANDUSE: dict[str, str] = {
    "residential": "R",
    "office": "B2",
    "commercial": "B1",
    "government": "A1",
    "education": "A3",
    "medical": "A5",
    "public": "A",
    "utility": "U",
    "transport": "S",
    "industrial": "M",
    "logistics": "W",
    "warehouse": "W",
}
UNKNOWN: RGBA = (200, 200, 200, 255)
#: factor on RGB of a building's colour for its underground floors
UNDERGROUND_SHADE = 0.45

#: underground structure kind -> colour (a documented palette: no dictionary has one)
UNDERGROUND_KIND: dict[str, RGBA] = {
    "metro_station": (64, 120, 200, 255),  # blue
    "metro_tunnel": (120, 150, 190, 255),  # grey blue
    "underground_passage": (220, 160, 60, 255),  # amber
    "utility_tunnel": (0, 160, 233, 255),  # the U (public utilities) colour
}
UNDERGROUND_OTHER: RGBA = (150, 150, 150, 255)


def _hex(value: str) -> RGBA:
    v = value.lstrip("#")
    return (int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16), 255)


@lru_cache
def landuse_colors() -> dict[str, RGBA]:
    """GB 50137 land-use code -> RGBA, from the shipped dictionary."""
    return {r["code"]: _hex(r["color_hex"]) for r in read_rows("land_use_gb50137.csv")}


def building_color(use: str | None) -> RGBA:
    """The colour of a building of this use (its land-use class's colour)."""
    code = USE_LANDUSE.get((use or "").strip().lower())
    return landuse_colors().get(code, UNKNOWN) if code else UNKNOWN


def shade(color: RGBA, factor: float = UNDERGROUND_SHADE) -> RGBA:
    """The colour darkened (RGB times ``factor``), alpha kept."""
    return (
        round(color[0] * factor),
        round(color[1] * factor),
        round(color[2] * factor),
        color[3],
    )


def underground_color(kind: str | None) -> RGBA:
    """The colour of an underground structure of this kind."""
    return UNDERGROUND_KIND.get((kind or "").strip().lower(), UNDERGROUND_OTHER)
