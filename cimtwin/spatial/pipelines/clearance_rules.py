"""The GB 50289-2016 clearance rule engine.

The shipped table (``cimtwin/reference/gb50289_2016_clearances.csv``) expanded to one rule per
variant, what a pipe is in the table's terms (:class:`PipeSpec`), and the clearance the table
asks between two pipes or a pipe and a building (:func:`clearance_rule`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cimtwin.reference import read_rows

# --- GB 50289-2016 clearances --------------------------------------------------------------------

CLEARANCE_CSV = "gb50289_2016_clearances.csv"
GAS_CLASSES = ("低压", "中压B", "中压A", "次高压B", "次高压A", "高压")
GAS_LABELS = frozenset({*GAS_CLASSES, "中压", "次高压"})
BURIAL_LABELS = {"直埋": "direct", "保护管": "duct", "管道": "duct", "通道": "duct"}
DIRECT_BURIAL = "ZM"
DIAMETER_LABEL = re.compile(r"^d\s*(<=|<|>=|>)\s*(\d+(?:\.\d+)?)\s*mm$", re.IGNORECASE)
WATER_ITEMS = ("给水管线", "再生水管线")
GAS_ITEMS = ("燃气", "燃气(低/中压)", "热力/燃气")
CABLE_ITEMS = ("电力", "通信")
BUILDING_ITEM = "建(构)筑物"
#: the name a pipe goes by in GB 50289's tables (for 'no rule' reports)
ITEM_NAMES = {
    "JS": "给水管线",
    "PS": "污水/雨水管线",
    "RQ": "燃气",
    "RL": "热力",
    "DL": "电力",
    "TX": "通信",
    "GY": "工业管线",
    "QT": "其他管线",
}


@dataclass(frozen=True)
class ClearanceRule:
    row: int  # line of the CSV (header is line 1)
    table: str
    kind: str  # horizontal / vertical
    item_a: str
    item_b: str
    variant: str  # the one variant this rule is for ('' = any)
    value_m: float
    status: str
    source: str
    row_variant: str  # the CSV cell, as written
    row_value: str

    @property
    def unverified(self) -> bool:
        return self.status.upper().startswith("UNVERIFIED")

    @property
    def verified(self) -> bool:
        return self.status.upper().startswith("VERIFIED")

    def as_json(self) -> dict[str, Any]:
        return {
            "standard": "GB 50289-2016",
            "table": self.table,
            "csv_row": self.row,
            "item_a": self.item_a,
            "item_b": self.item_b,
            "variant": self.row_variant,
            "value": self.row_value,
            "applied_variant": self.variant,
            "status": self.status,
            "source": self.source,
            "verified": self.verified,
            "unverified": self.unverified,
        }


def _variant_labels(text: str) -> list[str]:
    """'次高压B/A' -> ['次高压B', '次高压A']; '直埋/保护管' -> ['直埋', '保护管']."""
    parts = [p.strip() for p in text.split("/") if p.strip()]
    out: list[str] = []
    for p in parts:
        if len(p) == 1 and p.isalpha() and out:
            p = out[-1][:-1] + p
        out.append(p)
    return out


@lru_cache
def clearance_rules() -> tuple[ClearanceRule, ...]:
    """The shipped table expanded to one rule per variant (rows whose values are not numbers
    -- crossing angles -- or whose variants and values do not pair up are left out)."""
    out = []
    for line, r in enumerate(read_rows(CLEARANCE_CSV), start=2):
        if r["kind"] not in ("horizontal", "vertical"):
            continue
        try:
            values = [float(v) for v in r["value_m"].split("/")]
        except ValueError:
            continue
        labels = _variant_labels(r["variant"]) or [""]
        if len(values) == 1:
            values = values * len(labels)
        if len(values) != len(labels):
            continue
        for label, value in zip(labels, values, strict=True):
            out.append(
                ClearanceRule(
                    line,
                    r["table"],
                    r["kind"],
                    r["item_a"],
                    r["item_b"],
                    label,
                    value,
                    r["status"],
                    r["source"],
                    r["variant"],
                    r["value_m"],
                )
            )
    return tuple(out)


@dataclass(frozen=True)
class PipeSpec:
    """What the clearance rules need to know about a pipe (or a building)."""

    network: str  # CJJ 61 major code, or BUILDING for a building
    subtype: str | None = None
    diameter_mm: float | None = None
    width_mm: float | None = None
    height_mm: float | None = None
    pressure_class: str | None = None
    burial: str | None = None

    @property
    def size_mm(self) -> float | None:
        return self.diameter_mm or max(self.width_mm or 0, self.height_mm or 0) or None

    @property
    def item_name(self) -> str:
        if self.network == BUILDING:
            return BUILDING_ITEM
        if self.network == "JS" and self.subtype == "ZS":
            return "再生水管线"
        if self.network == "RL" and self.burial in (DIRECT_BURIAL, None):
            return "直埋热力"
        return ITEM_NAMES.get(self.network, self.network)


#: PipeSpec.network of a building
BUILDING = "BUILDING"


def gas_class(text: str | None) -> str | None:
    """GB 50028 pressure class from a survey's 压力 cell: a class name or a pressure in MPa."""
    if not text:
        return None
    t = re.sub(r"\s", "", text).upper().replace("Ａ", "A").replace("Ｂ", "B")
    for name in ("次高压A", "次高压B", "次高压", "中压A", "中压B", "中压", "低压", "高压"):
        if name in t:
            return name
    m = re.match(r"^(\d+(?:\.\d+)?)(MPA|KPA)?$", t)
    if not m:
        return None
    p = float(m.group(1)) / (1000.0 if m.group(2) == "KPA" else 1.0)
    for limit, name in (
        (0.01, "低压"),
        (0.2, "中压B"),
        (0.4, "中压A"),
        (0.8, "次高压B"),
        (1.6, "次高压A"),
    ):
        if p < limit or (limit > 0.01 and p <= limit):
            return name
    return "高压"


def item_matches(item: str, p: PipeSpec) -> bool:
    net, sub = p.network, p.subtype
    if item == BUILDING_ITEM:
        return net == BUILDING
    if item == "给水管线":
        return net == "JS" and sub != "ZS"
    if item == "再生水管线":
        return net == "JS" and sub == "ZS"
    if item == "污水/雨水管线":
        return net == "PS"
    if item == "燃气":
        return net == "RQ"
    if item == "燃气(低/中压)":
        return net == "RQ" and gas_class(p.pressure_class) in (
            None,
            "低压",
            "中压",
            "中压A",
            "中压B",
        )
    if item == "热力":
        return net == "RL"
    if item == "直埋热力":
        return net == "RL" and p.burial in (DIRECT_BURIAL, None)
    if item == "热力/燃气":
        return net in ("RL", "RQ")
    if item == "电力":
        return net == "DL"
    if item == "通信":
        return net == "TX"
    if item == "管沟":
        return p.burial == "GG" and net not in ("PS", "DL", "TX", BUILDING)
    return False  # trees, kerbs, railways ...: not in the twin's pipe tables


def _variant_owner(rule: ClearanceRule, category: str) -> str | None:
    """Which side of the rule ('a' or 'b') its variant describes."""
    owners = {"diameter": WATER_ITEMS, "gas": GAS_ITEMS, "burial": CABLE_ITEMS}[category]
    if rule.item_a in owners:
        return "a"
    if rule.item_b in owners:
        return "b"
    return None


def variant_matches(label: str, p: PipeSpec, category: str) -> tuple[bool, str | None]:
    """Does the pipe fall under the variant? (match, assumption made when data is missing)."""
    if category == "diameter":
        m = DIAMETER_LABEL.match(label)
        if m is None:
            raise ValueError(f"{label!r} is not a diameter variant such as 'd<=300mm'")
        op, limit = m.group(1), float(m.group(2))
        size = p.size_mm
        if size is None:
            return True, "pipe size unknown: every diameter class considered"
        ok = {"<=": size <= limit, "<": size < limit, ">=": size >= limit, ">": size > limit}[op]
        return ok, None
    if category == "gas":
        cls = gas_class(p.pressure_class)
        if p.network != "RQ":
            return True, None
        if cls is None:
            return True, "gas pressure class unknown: every class considered"
        if cls == label:
            return True, None
        if cls in ("中压", "次高压") and label.startswith(cls) and len(label) == len(cls) + 1:
            return True, f"pressure class {cls} without A/B: both considered"
        if label in ("中压", "次高压") and cls.startswith(label):
            return True, None
        return False, None
    if category == "burial":
        if p.burial is None:
            return True, "burial method unknown: direct burial and ducts considered"
        kind = "direct" if p.burial == DIRECT_BURIAL else "duct"
        return BURIAL_LABELS[label] == kind, None
    return False, None


def _label_category(label: str) -> str | None:
    if not label:
        return ""
    if DIAMETER_LABEL.match(label):
        return "diameter"
    if label in GAS_LABELS:
        return "gas"
    if label in BURIAL_LABELS:
        return "burial"
    return None


@dataclass
class RuleMatch:
    required_m: float
    rule: ClearanceRule
    considered: list[ClearanceRule]
    assumptions: list[str]


def clearance_rule(kind: str, p: PipeSpec, q: PipeSpec) -> RuleMatch | None:
    """The clearance GB 50289 asks between p and q (the largest of the rows that apply, with
    the assumptions made where the data leave the variant open), or None when it has none."""
    found: list[tuple[ClearanceRule, str | None]] = []
    for rule in clearance_rules():
        if rule.kind != kind:
            continue
        category = _label_category(rule.variant)
        if category is None:
            continue
        for a, b in ((p, q), (q, p)):
            if not (item_matches(rule.item_a, a) and item_matches(rule.item_b, b)):
                continue
            assumption = None
            if category:
                owner = _variant_owner(rule, category)
                if owner is None:
                    continue
                ok, assumption = variant_matches(rule.variant, a if owner == "a" else b, category)
                if not ok:
                    continue
                if rule.item_a == rule.item_b and category == "burial":
                    ok2, assumption2 = variant_matches(
                        rule.variant, b if owner == "a" else a, category
                    )
                    assumption = assumption or assumption2
            found.append((rule, assumption))
            break
    if not found:
        return None
    best = max(found, key=lambda f: (f[0].value_m, f[0].verified))
    assumptions = sorted({a for _, a in found if a})
    return RuleMatch(best[0].value_m, best[0], [r for r, _ in found], assumptions)


def spec_from(row: Sequence[Any]) -> PipeSpec:
    """(network, subtype, diameter, width, height, pressure_class, burial) -> PipeSpec."""
    return PipeSpec(*row[:7])


#: the items of the table that stand for something in the twin's pipe and building tables
TWIN_ITEMS = frozenset(
    {
        BUILDING_ITEM,
        *WATER_ITEMS,
        *GAS_ITEMS,
        *CABLE_ITEMS,
        "污水/雨水管线",
        "热力",
        "直埋热力",
        "管沟",
    }
)


def max_rule_value(kind: str, building: bool) -> float:
    """The largest clearance a pipe pair (or a pipe and a building) can be asked for."""
    vals = [
        r.value_m
        for r in clearance_rules()
        if r.kind == kind
        and r.item_a in TWIN_ITEMS
        and r.item_b in TWIN_ITEMS
        and (r.item_a == BUILDING_ITEM or r.item_b == BUILDING_ITEM) == building
    ]
    return max(vals, default=0.0)
