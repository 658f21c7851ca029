"""The Citus layout of ``cimtwin.db.layout`` checked against the migrated catalog, the data and
the service's SQL: there is no Citus on these machines, so these are the rules it would
enforce (docs/scaling.md, "Citus")."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from sqlalchemy import Engine, text

from cimtwin.db import layout
from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import ImportFailed
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportOptions, run_import
from cimtwin.spatial.admin_grid import GridIndex
from cimtwin.spatial.county import CountyPlacement
from cimtwin.spatial.model import SCHEMA, Base
from cimtwin.spatial.pipeline_network import SEGMENT_END_KEYS
from tests.conftest import ROOT

KEY = layout.DISTRIBUTION_COLUMN


def _catalog(engine: Engine, query: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(query), {"s": SCHEMA}).all()]


#: every constraint of the schema's tables with the columns it covers on both sides
CONSTRAINTS = """
SELECT t.relname, k.conname, k.contype, f.relname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, pos)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num
             ORDER BY u.pos) AS cols,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, pos)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num
             ORDER BY u.pos) AS ref_cols
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_class f ON f.oid = k.confrelid
WHERE n.nspname = :s AND k.contype IN ('p', 'u', 'f') AND NOT t.relispartition
"""


def _constraints(engine: Engine) -> list[tuple]:
    """:data:`CONSTRAINTS`, and the keys each pair of pipeline partitions carries instead of
    the parents (``SEGMENT_END_KEYS``, checked on the partitions below), as parent rows."""
    pair_keys = [
        ("pipeline_segment", name, "f", "pipeline_node", ["batch_id", column], ["batch_id", "id"])
        for name, column in SEGMENT_END_KEYS
    ]
    return _catalog(engine, CONSTRAINTS) + pair_keys


def test_each_segment_partition_keys_its_ends_to_its_batch_s_nodes(
    engine: Engine, loaded_sample
) -> None:
    """The keys :func:`_constraints` counts are on every segment partition, towards the node
    partition of the same batch, and on no parent."""
    assert loaded_sample
    rows = _catalog(
        engine,
        "SELECT t.relname, k.conname, f.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class t ON t.oid = k.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "JOIN pg_class f ON f.oid = k.confrelid "
        "WHERE n.nspname = :s || '_part' AND t.relname LIKE 'pipeline\\_segment\\_b%' "
        "AND f.relname LIKE 'pipeline\\_node%'",
    )
    partitions = {
        r[0]
        for r in _catalog(
            engine,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = :s AND p.relname = 'pipeline_segment'",
        )
    }
    assert partitions, "the sample has no pipeline partitions"
    want = {
        (part, name, part.replace("segment", "node"), f"FOREIGN KEY (batch_id, {column})")
        for part in partitions
        for name, column in SEGMENT_END_KEYS
    }
    found = {(t, k, f, d.split(" REFERENCES")[0]) for t, k, f, d in rows if t in partitions}
    assert found == want
    on_parent = [r for r in _catalog(engine, CONSTRAINTS) if r[0] == "pipeline_segment"]
    assert not {name for name, _ in SEGMENT_END_KEYS} & {r[1] for r in on_parent}


def test_every_table_is_classified_once(engine: Engine) -> None:
    """A new table fails here until layout.py says whether it is distributed or reference."""
    tables = {
        r[0]
        for r in _catalog(
            engine,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname <> 'alembic_version'",
        )
    }
    assert not layout.DISTRIBUTED & layout.REFERENCE
    classified = layout.DISTRIBUTED | layout.REFERENCE
    assert tables - classified == set(), "tables layout.py does not classify"
    assert classified - tables == set(), "layout.py classifies tables the schema lacks"
    assert {t.name for t in Base.metadata.sorted_tables} == classified


def test_every_distributed_table_carries_a_not_null_county_code(engine: Engine) -> None:
    cols = {
        r[0]: r[1:]
        for r in _catalog(
            engine,
            "SELECT table_name, is_nullable, character_maximum_length FROM "
            "information_schema.columns WHERE table_schema = :s AND column_name = 'county_code'",
        )
    }
    checks = {
        r[0]
        for r in _catalog(
            engine,
            "SELECT t.relname FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = :s "
            "AND k.contype = 'c' AND k.conname = 'ck_' || t.relname || '_county_code'",
        )
    }
    for table in sorted(layout.DISTRIBUTED):
        assert cols.get(table) == ("NO", layout.COUNTY_DIGITS), f"{table}.county_code"
        assert table in checks, f"{table}: no 6-digit check on county_code"
        column = Base.metadata.tables[f"{SCHEMA}.{table}"].columns.get(KEY)
        assert column is not None and not column.nullable, f"model {table}.county_code"
    assert set(cols) == layout.DISTRIBUTED, "county_code on a reference table"


def _key_breaks(row: tuple) -> bool:
    """Citus' rule for a constraint of a distributed table: PK and UNIQUE include the
    distribution column; an FK to another distributed table joins on it."""
    table, _, kind, ref, cols, ref_cols = row
    if table not in layout.DISTRIBUTED:
        return False
    if kind in ("p", "u"):
        return KEY not in cols
    if ref not in layout.DISTRIBUTED:
        return False  # to a reference table: allowed as it is
    return not any(a == KEY and b == KEY for a, b in zip(cols, ref_cols, strict=True))


def test_key_violations_are_exactly_the_known_list(engine: Engine) -> None:
    """Fails on a new key Citus would refuse, and on a listed one that is fixed or gone
    (then layout.KEY_VIOLATIONS and docs/scaling.md are updated)."""
    found = {(r[0], r[1]) for r in _constraints(engine) if _key_breaks(r)}
    assert found - layout.KEY_VIOLATIONS == set(), "new keys without county_code"
    assert layout.KEY_VIOLATIONS - found == set(), "listed violations that are gone"


def test_the_key_rule_tells_a_good_key_from_a_bad_one() -> None:
    """The check above can fail: the rule on hand-made constraint rows."""
    good_pk = ("building", "pk", "p", None, ["county_code", "id"], [])
    bad_fk = ("pipeline_segment", "fk", "f", "pipeline_node", ["batch_id"], ["batch_id"])
    good_fk = ("bim_storey", "fk", "f", "bim_model", ["model_id", KEY], ["id", KEY])
    crossed = ("bim_storey", "fk", "f", "bim_model", [KEY, "model_id"], ["id", KEY])
    to_reference = ("parcel", "fk", "f", "land_use_class", ["land_use"], ["code"])
    rows = (good_pk, bad_fk, good_fk, crossed, to_reference)
    assert [_key_breaks(r) for r in rows] == [False, True, False, True, False]


def test_no_foreign_key_from_a_reference_table_to_a_distributed_one(engine: Engine) -> None:
    bad = [
        (r[0], r[1], r[3])
        for r in _constraints(engine)
        if r[2] == "f" and r[0] in layout.REFERENCE and r[3] in layout.DISTRIBUTED
    ]
    assert bad == []


def test_rows_sit_in_the_county_of_the_rows_they_belong_to(engine: Engine, loaded_sample) -> None:
    """Co-location, on the imported sample: a grid code's first six digits are its row's
    county, and every row referencing another big table's row is in that row's county (a
    pipe and its end nodes, a valve and its pipe, a BIM element and its model ...)."""
    assert loaded_sample
    fks = [r for r in _constraints(engine) if r[2] == "f" and r[3] in layout.DISTRIBUTED]
    assert {(r[0], r[3]) for r in fks} >= {
        ("pipeline_segment", "pipeline_node"),
        ("pipeline_valve", "pipeline_segment"),
        ("bim_element", "bim_model"),
    }
    counted = {}
    with engine.connect() as c:
        for table in sorted(layout.DISTRIBUTED):
            counted[table] = c.execute(text(f"SELECT count(*) FROM {SCHEMA}.{table}")).scalar()
            if "grid_code" in Base.metadata.tables[f"{SCHEMA}.{table}"].columns:
                off = c.execute(
                    text(
                        f"SELECT count(*) FROM {SCHEMA}.{table} WHERE grid_code IS NOT NULL "
                        "AND county_code <> left(grid_code, 6)"
                    )
                ).scalar()
                assert off == 0, f"{table}: county_code is not its grid code's county"
        for table, name, _, ref, cols, ref_cols in fks:
            on = " AND ".join(f"p.{b} = t.{a}" for a, b in zip(cols, ref_cols, strict=True))
            off = c.execute(
                text(
                    f"SELECT count(*) FROM {SCHEMA}.{table} t JOIN {SCHEMA}.{ref} p ON {on} "
                    "WHERE p.county_code <> t.county_code"
                )
            ).scalar()
            assert off == 0, f"{name}: {off} {table} rows in another county than their {ref}"
    for table in ("building", "pipeline_node", "pipeline_segment", "bim_element", "incident"):
        assert counted[table] > 0, f"the sample has no {table} rows to check"


# -- placing rows: the rule, and the import error --------------------------------------------


def _square(x: float, y: float, side: float = 100.0) -> shapely.Polygon:
    return shapely.box(x, y, x + side, y + side)


def test_placement_takes_the_batch_then_the_twin_county_else_refuses() -> None:
    two = GridIndex(["440309001001001", "440303001001001"], [_square(0, 0), _square(1000, 0)])
    inside_a, outside = shapely.Point(50, 50), shapely.Point(500, 500)
    place = CountyPlacement(two, "440309")
    found = place.at([inside_a, outside, shapely.Point(1050, 50)])
    assert found.tolist() == ["440309", None, "440303"]
    # an import of one county: its rows outside the grids are that county's
    assert place.complete(found[:2], "f.geojson: building", ["A", "B"]).tolist() == [
        "440309",
        "440309",
    ]
    with pytest.raises(ImportFailed, match=r"f.geojson: building: feature\(s\) B lie outside"):
        place.complete(found, "f.geojson: building", ["A", "B", "C"])
    # a twin of one county (or of no grid yet: the configured one) places everything
    one = CountyPlacement(GridIndex(["440305001001001"], [_square(0, 0)]), "440309")
    assert one.complete(one.at([outside]), "x", ["B"]).tolist() == ["440305"]
    empty = CountyPlacement(GridIndex([], []), "440309")
    assert empty.complete(np.array([None], dtype=object), "x", ["B"]).tolist() == ["440309"]


def _buildings(path: Path, places: dict[str, tuple[float, float]]) -> Path:
    d = 0.0002
    features = [
        {
            "type": "Feature",
            "properties": {"building_code": code, "height_m": 12, "floors": 4},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]],
                ],
            },
        }
        for code, (x, y) in places.items()
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    return path


def _counties(url: str) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return dict(conn.execute(f"SELECT building_code, county_code FROM {SCHEMA}.building"))


def test_an_unplaceable_building_stops_the_import_naming_file_and_feature(
    two_county_twin, tmp_path: Path
) -> None:
    url, ((ax, ay), (bx, by)) = two_county_twin
    far = (114.100, 22.700)
    mixed = _buildings(tmp_path / "mixed.geojson", {"A1": (ax, ay), "B1": (bx, by), "X1": far})
    with pytest.raises(ImportFailed) as failed:
        run_import(importer_for("buildings"), [mixed], ImportOptions(), url)
    message = str(failed.value)
    assert "mixed.geojson: building: feature(s) X1 lie outside every work grid" in message
    assert "counties 440303, 440309" in message and "nothing was written" in message
    assert _counties(url) == {}
    # one county's delivery: its building outside the grids goes with the others
    one = _buildings(tmp_path / "one.geojson", {"A1": (ax, ay), "X1": far})
    run_import(importer_for("buildings"), [one], ImportOptions(), url)
    assert _counties(url) == {"A1": "440309", "X1": "440309"}


# -- the service's SQL: statements joining big tables without the district key -------------

_MODELS = {m.class_.__name__: m.local_table.name for m in Base.registry.mappers}
_TABLE_CALLS = ("table", "identifier", "qualified")


def _named_tables(node: ast.AST) -> set[str]:
    """Distributed tables a node names: ``T.x``, ``table(Model)``, ``identifier(Model)``,
    ``bulk.qualified(Model)``."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "T":
            out.add(n.attr)
        elif isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Name):
            func = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            if func in _TABLE_CALLS and n.args[0].id in _MODELS:
                out.add(_MODELS[n.args[0].id])
    return out & layout.DISTRIBUTED


def _module_aliases(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level names bound to one big table (``SEG = T.pipeline_segment``)."""
    out = {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            found = _named_tables(n.value)
            if len(found) == 1:
                out[n.targets[0].id] = found
    return out


def _text(node: ast.AST) -> str:
    """The literal SQL text inside an f-string (its constant parts)."""
    return " ".join(
        c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
    )


def _statements(path: Path, tree: ast.Module, aliases: dict[str, set[str]]) -> Iterator:
    """(function, big tables referenced, SQL text) of each f-string of a module."""
    owner: dict[int, ast.AST] = {}
    scopes: list[ast.AST] = [tree]
    scopes += [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for scope in scopes:  # a nested function is walked after its parent: innermost wins
        for n in ast.walk(scope):
            owner[id(n)] = scope
    # names bound in a function to one table, or to an SQL fragment (whose text then counts
    # as part of the statement it is put into)
    local: dict[tuple[int, str], tuple[set[str], str]] = {}
    for scope in scopes[1:]:
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and len(n.targets) == 1:
                target = n.targets[0]
                if isinstance(target, ast.Name) and (found := _named_tables(n.value)):
                    fragment = isinstance(n.value, ast.JoinedStr)
                    if fragment or len(found) == 1:
                        text = _text(n.value) if fragment else ""
                        local[(id(owner[id(n)]), target.id)] = (found, text)
    for n in ast.walk(tree):
        if not isinstance(n, ast.JoinedStr):
            continue
        scope = owner[id(n)]
        refs: list[str] = []  # one entry per table reference: a self-join counts twice
        sql = _text(n)
        for part in n.values:
            if isinstance(part, ast.FormattedValue):
                found = _named_tables(part.value)
                for v in ast.walk(part.value):
                    if isinstance(v, ast.Name):
                        tables, text = local.get((id(scope), v.id), (aliases.get(v.id, set()), ""))
                        found |= tables
                        sql += " " + text
                refs += sorted(found)
        yield getattr(scope, "name", "<module>"), refs, sql


def _joins_without_county() -> dict[str, frozenset[str]]:
    package = ROOT / "cimtwin"
    trees = {
        p: ast.parse(p.read_text("utf-8"))
        for p in sorted(package.rglob("*.py"))
        if "migrations" not in p.parts
    }
    dotted = {".".join(p.relative_to(ROOT).with_suffix("").parts): t for p, t in trees.items()}
    exported = {name: _module_aliases(t) for name, t in dotted.items()}
    out: dict[str, set[str]] = {}
    for path, tree in trees.items():
        aliases = dict(_module_aliases(tree))
        for n in ast.walk(tree):  # names imported from another module of the package
            if isinstance(n, ast.ImportFrom) and n.module in exported:
                for a in n.names:
                    if a.name in exported[n.module]:
                        aliases[a.asname or a.name] = exported[n.module][a.name]
        for func, refs, sql in _statements(path, tree, aliases):
            if len(refs) >= 2 and KEY not in sql:
                key = f"{path.relative_to(ROOT).as_posix()}:{func}"
                out.setdefault(key, set()).update(refs)
    return {k: frozenset(v) for k, v in out.items()}


def test_joins_of_big_tables_without_the_county_code_are_the_known_list() -> None:
    """Each statement joining two big tables either carries county_code or is listed (with
    its tables) in layout.JOINS_WITHOUT_COUNTY, which docs/scaling.md explains: a new one
    fails here, and so does a listed one that now carries the key or is gone."""
    found = _joins_without_county()
    assert "cimtwin/spatial/pipelines/profile.py:<module>" in found  # the scan sees imports
    new = {k: sorted(v) for k, v in found.items() if layout.JOINS_WITHOUT_COUNTY.get(k) != v}
    gone = sorted(set(layout.JOINS_WITHOUT_COUNTY) - set(found))
    assert new == {}, "joins of big tables without county_code, not in the layout's list"
    assert gone == [], "listed joins that now carry county_code or are gone"


def test_migration_0010_fills_the_key_as_the_importers_do(
    database_url: str, engine: Engine, loaded_sample
) -> None:
    """Down to 0009 (the column goes) and up again on the imported sample: the back-fill
    gives every row the county the importers gave it."""
    from cimtwin.db import migrate

    def keys() -> dict[str, list[tuple]]:
        with engine.connect() as c:
            return {
                t: [
                    tuple(r)
                    for r in c.execute(
                        text(f"SELECT id, county_code FROM {SCHEMA}.{t} ORDER BY id")
                    ).all()
                ]
                for t in sorted(layout.DISTRIBUTED)
            }

    assert loaded_sample
    before = keys()
    assert sum(len(v) for v in before.values()) > 1000
    migrate.downgrade(database_url, "0009")
    try:
        with engine.connect() as c:
            gone = c.execute(
                text(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = :s "
                    "AND column_name = 'county_code'"
                ),
                {"s": SCHEMA},
            ).scalar()
        assert gone == 0
    finally:
        migrate.upgrade(database_url)
    assert keys() == before


def test_feature_names_name_a_row_by_its_code_else_its_number() -> None:
    """Made only for the rows an error lists; each the same as the whole list was."""
    from cimtwin.spatial.county import feature_names

    coded = feature_names(pd.DataFrame({"point_no": ["JS1", "JS2", "JS3"], "x": [1, 2, 3]}))
    assert len(coded) == 3 and coded[0] == "JS1" and coded[-1] == "JS3"
    assert list(coded) == ["JS1", "JS2", "JS3"] and coded[1:] == ["JS2", "JS3"]
    assert [coded[i] for i in np.array([2, 0])] == ["JS3", "JS1"]  # numpy positions
    plain = feature_names(pd.DataFrame({"x": [1.0, 2.0]}))
    assert list(plain) == ["row 1", "row 2"]
    with pytest.raises(IndexError):
        plain[2]
