"""Legends of the twin's themes, from the same dictionaries the styles colour with: one table
per theme (which property, how its value is keyed, and each key's label and colour), so the 2D
map, the 3D viewer's draped themes and their legends can never disagree with the styles."""

from __future__ import annotations

from typing import Any

from cimtwin import reference
from cimtwin.styles import COMPONENT_MAJOR_COLORS, FALLBACK, SEVERITY_COLORS

SEVERITY_LABELS = {1: "一般 low", 2: "较大 moderate", 3: "重大 high", 4: "特别重大 critical"}
#: grid and community outlines (the grids style's colours)
GRID_COLORS = {"grid": "#3d85c6", "community": "#073763"}


def _entries(pairs: list[tuple[Any, str, str]]) -> list[dict[str, Any]]:
    return [{"value": v, "label": label, "color": color} for v, label, color in pairs]


def legends() -> list[dict[str, Any]]:
    """Each theme: ``id``, ``title``, the MVT ``layers`` it draws, the ``property`` it is
    coloured by (``prefix``: only that many leading characters are the key), its ``entries``
    and the ``fallback`` colour of any other value."""
    networks: dict[str, tuple[str, str]] = {}
    for t in reference.pipeline_types():
        networks.setdefault(t.major_code, (t.major_name, t.color_hex))
    land: dict[str, tuple[str, str]] = {}
    for r in reference.read_rows("land_use_gb50137.csv"):
        if r["code"] == r["major_code"]:
            land[r["code"]] = (f"{r['code']} {r['name']}", r["color_hex"])
    for r in reference.read_rows("land_use_gb50137.csv"):  # a major class with no row of its own
        land.setdefault(r["major_code"], (r["major_code"], r["color_hex"]))
    majors = {c.major_code: c.major_name for c in reference.component_classes().values()}
    return [
        {
            "id": "pipelines",
            "title": "管线 Pipelines (CJJ 61-2017 Appendix B colours)",
            "layers": ["pipelines", "pipeline_points"],
            "property": "network",
            "prefix": None,
            "entries": _entries([(k, f"{k} {n}", c) for k, (n, c) in networks.items()]),
            "fallback": FALLBACK,
        },
        {
            "id": "parcels",
            "title": "地块 Land use (GB 50137-2011)",
            "layers": ["parcels"],
            "property": "land_use",
            "prefix": 1,
            "entries": _entries([(k, n, c) for k, (n, c) in land.items()]),
            "fallback": FALLBACK,
        },
        {
            "id": "components",
            "title": "城市部件 City components (major class)",
            "layers": ["components"],
            "property": "class_code",
            "prefix": 2,
            "entries": _entries(
                [(k, f"{k} {majors.get(k, k)}", c) for k, c in COMPONENT_MAJOR_COLORS.items()]
            ),
            "fallback": FALLBACK,
        },
        {
            "id": "incidents",
            "title": "事件 Incident severity",
            "layers": ["incidents"],
            "property": "severity",
            "prefix": None,
            "entries": _entries([(k, SEVERITY_LABELS[k], c) for k, c in SEVERITY_COLORS.items()]),
            "fallback": FALLBACK,
        },
        {
            "id": "grids",
            "title": "网格 Work grids",
            "layers": ["grids", "communities"],
            "property": None,
            "prefix": None,
            "entries": _entries(
                [
                    ("grid", "单元网格 work grid", GRID_COLORS["grid"]),
                    ("community", "社区 community", GRID_COLORS["community"]),
                ]
            ),
            "fallback": GRID_COLORS["grid"],
        },
    ]
