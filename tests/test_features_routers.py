"""Structure of the features API: one module per job, routers that import no other router,
and no module over the size a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cimtwin" / "api" / "features"


def _routers() -> set[str]:
    """Modules of the package that define an APIRouter (found, not listed, so a new router
    module is checked too)."""
    found = set()
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "APIRouter"
            ):
                found.add(path.stem)
    return found


def test_features_routers_import_no_other_router() -> None:
    routers = _routers()
    assert {"collections", "items"} <= routers
    found = []
    for name in sorted(routers):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
                names = [a.name for a in node.names]
                targets = (
                    names
                    if mod == "cimtwin.api.features"
                    else [mod.removeprefix("cimtwin.api.features.")]
                )
                found += [f"{name} imports {t}" for t in targets if t in routers and t != name]
    assert found == []


def test_features_modules_are_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert sizes and all(n < 400 for n in sizes.values()), sizes
    assert not (PACKAGE.parent / "feature_queries.py").exists()
    assert not (PACKAGE.parent / "features.py").exists()
