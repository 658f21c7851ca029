"""Code dictionaries (CJJ 61 types and attributes, component classes, GB 50137 land use).

Seeded from the CSVs in :mod:`cimtwin.reference` by the first migration; foreign keys from the
data tables keep imported codes honest.
"""

from __future__ import annotations

from sqlalchemy import Connection, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from cimtwin.spatial.base import Base, table_of


class PipelineType(Base):
    """CJJ 61-2017 Appendix B: one row per minor type (e.g. JP 配水 under JS 给水)."""

    __tablename__ = "pipeline_type"

    code: Mapped[str] = mapped_column(String(4), primary_key=True)  # minor letters
    network: Mapped[str] = mapped_column(String(4), index=True)  # major letters
    network_digit: Mapped[int] = mapped_column(SmallInteger)
    network_name: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(32))
    digits: Mapped[str] = mapped_column(String(2))
    color_name: Mapped[str] = mapped_column(String(16))
    color_hex: Mapped[str] = mapped_column(String(7))


class CodeDictionary(Base):
    """CJJ 61-2017 Appendix C dictionaries: material, burial method, status."""

    __tablename__ = "code_dictionary"

    dict: Mapped[str] = mapped_column(String(32), primary_key=True)
    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class ComponentClass(Base):
    """City-component small class (4-digit code); replaceable per deployment."""

    __tablename__ = "component_class"

    code: Mapped[str] = mapped_column(String(4), primary_key=True)
    major_code: Mapped[str] = mapped_column(String(2), index=True)
    major_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    agreement: Mapped[str | None] = mapped_column(String(16))


class LandUseClass(Base):
    """GB 50137-2011 urban land-use classification."""

    __tablename__ = "land_use_class"

    code: Mapped[str] = mapped_column(String(4), primary_key=True)
    major_code: Mapped[str] = mapped_column(String(2))
    name: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(64))


def dictionary_rows() -> dict[type[Base], list[dict[str, object]]]:
    """Rows for every dictionary table, from the shipped (or deployment's) reference CSVs."""
    from cimtwin import reference

    return {
        PipelineType: [
            {
                "code": t.minor_code,
                "network": t.major_code,
                "network_digit": int(t.major_digit),
                "network_name": t.major_name,
                "name": t.minor_name,
                "digits": t.minor_digits,
                "color_name": t.color_name,
                "color_hex": t.color_hex,
            }
            for t in reference.pipeline_types()
        ],
        CodeDictionary: [
            {
                "dict": r["dict"],
                "code": r["code"],
                "name": r["name"],
                "note": r["applies_to_or_note"] or None,
            }
            for r in reference.read_rows("cjj61_2017_attribute_dicts.csv")
        ],
        ComponentClass: [
            {
                "code": c.code,
                "major_code": c.major_code,
                "major_name": c.major_name,
                "name": c.name,
                "agreement": c.agreement,
            }
            for c in reference.component_classes().values()
        ],
        LandUseClass: [
            {
                "code": r["code"],
                "major_code": r["major_code"],
                "name": r["name"],
                "name_en": r["name_en"],
            }
            for r in reference.read_rows("land_use_gb50137.csv")
        ],
    }


def seed_dictionaries(bind: Connection) -> dict[str, int]:
    """Insert or update every dictionary row (codes in use are never deleted)."""
    counts = {}
    for model, rows in dictionary_rows().items():
        table = table_of(model)
        stmt = insert(table).values(rows)
        keys = [c.name for c in table.primary_key.columns]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        )
        bind.execute(stmt)
        counts[table.name] = len(rows)
    return counts
