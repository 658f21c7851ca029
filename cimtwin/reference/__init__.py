"""Domain dictionaries shipped with cimtwin (copies of ../shared/domain plus GB 50137 land use).

A deployment may point ``CIMTWIN_REFERENCE_DIR`` at its own copies (component codes differ
between cities); the loaders below read from there first.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TextIO


def _open(name: str) -> TextIO:
    override = os.environ.get("CIMTWIN_REFERENCE_DIR")
    if override and (Path(override) / name).is_file():
        return open(Path(override) / name, encoding="utf-8", newline="")
    # Traversable.open takes no newline argument: wrap the binary stream instead (the csv
    # module needs newline="")
    binary = resources.files(__package__).joinpath(name).open("rb")
    return io.TextIOWrapper(binary, encoding="utf-8", newline="")


def read_rows(name: str) -> list[dict[str, str]]:
    """All rows of a shipped reference CSV as dicts."""
    with _open(name) as fh:
        return list(csv.DictReader(fh))


@dataclass(frozen=True)
class PipelineType:
    major_name: str
    major_code: str  # letters, e.g. JS
    major_digit: str
    minor_name: str
    minor_code: str  # letters, e.g. JP
    minor_digits: str
    color_name: str
    color_rgb: tuple[int, int, int]

    @property
    def color_hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color_rgb)


@lru_cache
def pipeline_types() -> tuple[PipelineType, ...]:
    """CJJ 61-2017 Appendix B pipeline types with their standard display colours."""
    out = []
    for r in read_rows("cjj61_2017_pipeline_types.csv"):
        rgb = tuple(int(v) for v in r["color_rgb"].split(","))
        out.append(
            PipelineType(
                r["major_name"],
                r["major_code_letters"],
                r["major_code_digit"],
                r["minor_name"],
                r["minor_code_letters"],
                r["minor_code_digits"],
                r["color_name"],
                rgb,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


@lru_cache
def network_codes() -> frozenset[str]:
    """Major network letter codes (JS, PS, RQ, ...)."""
    return frozenset(t.major_code for t in pipeline_types())


@lru_cache
def attribute_codes(dict_name: str) -> dict[str, str]:
    """CJJ 61 Appendix C dictionary (material, burial, status): code -> name."""
    return {
        r["code"]: r["name"]
        for r in read_rows("cjj61_2017_attribute_dicts.csv")
        if r["dict"] == dict_name
    }


@dataclass(frozen=True)
class ComponentClass:
    code: str
    major_code: str
    major_name: str
    name: str
    agreement: str


@lru_cache
def component_classes() -> dict[str, ComponentClass]:
    """City-component small classes (code -> class). Codes with no name in source A use B's."""
    out: dict[str, ComponentClass] = {}
    for r in read_rows("city_component_codes.csv"):
        name = r["name_srcA_cetccity_BJxxxx"] or r["name_srcB_beijing_1001xx"]
        if not name:
            continue
        out[r["minor_code"]] = ComponentClass(
            r["minor_code"], r["major_code"], r["major_name"], name, r["agreement"]
        )
    return out


@lru_cache
def land_use_classes() -> dict[str, str]:
    """GB 50137-2011 land-use classes: code -> Chinese name."""
    return {r["code"]: r["name"] for r in read_rows("land_use_gb50137.csv")}
