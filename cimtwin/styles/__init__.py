"""MapLibre style documents: JSON templates here, with colours filled in from the domain
dictionaries (so a deployment's own CJJ 61 or land-use table recolours the maps) and URLs
pointing back at the serving host."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from cimtwin import reference

FALLBACK = "#888888"
#: severity 1 (low) .. 4 (critical)
SEVERITY_COLORS = {1: "#2b83ba", 2: "#fdae61", 3: "#f46d43", 4: "#d7191c"}
#: component major classes (公用设施, 道路交通, 市容环境, 园林绿化, 房屋土地, 其他, 扩展)
COMPONENT_MAJOR_COLORS = {
    "01": "#1f78b4",
    "02": "#ff7f00",
    "03": "#6a3d9a",
    "04": "#33a02c",
    "05": "#b15928",
    "06": "#e31a1c",
    "21": "#666666",
}


def names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".json")
    )


@lru_cache
def _template(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")


def _match(getter: list, pairs: dict[Any, str]) -> list:
    expr: list = ["match", getter]
    for k, v in pairs.items():
        expr += [k, v]
    return [*expr, FALLBACK]


def expressions() -> dict[str, list]:
    """Colour expressions by placeholder name, built from the dictionaries."""
    networks: dict[str, str] = {}
    for t in reference.pipeline_types():
        networks.setdefault(t.major_code, t.color_hex)
    land: dict[str, str] = {}
    land_names: list = ["match", ["get", "land_use"]]  # GB 50137 code -> its Chinese name
    for r in reference.read_rows("land_use_gb50137.csv"):
        land.setdefault(r["major_code"], r["color_hex"])
        land_names += [r["code"], r["name"]]
    return {
        "$pipeline_network_colors": _match(["get", "network"], networks),
        "$land_use_colors": _match(["slice", ["get", "land_use"], 0, 1], land),
        "$land_use_names": [*land_names, ["get", "land_use"]],
        "$component_major_colors": _match(
            ["slice", ["get", "class_code"], 0, 2], COMPONENT_MAJOR_COLORS
        ),
        "$incident_severity_colors": _match(["get", "severity"], SEVERITY_COLORS),
    }


def render(name: str, base_url: str) -> dict[str, Any]:
    """The style ``name`` with its colours filled in and URLs under ``base_url``."""
    if name not in names():
        raise KeyError(name)
    doc = json.loads(_template(name).replace("{base_url}", base_url.rstrip("/")))
    exprs = expressions()

    def fill(node: Any) -> Any:
        if isinstance(node, str) and node in exprs:
            return exprs[node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(doc)
