"""Where the third-party samples are: ``../shared/data`` beside the clone (CI, /work/main), or
two folders up from a git worktree; tests skip, saying which folder, when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared(sub: str) -> Path:
    """``../shared/SUB`` beside the project (or a worktree one folder deeper); the first
    candidate when neither exists (the skip reason names it)."""
    candidates = (ROOT.parent / "shared" / sub, ROOT.parent.parent / "shared" / sub)
    return next((p for p in candidates if p.exists()), candidates[0])


IFC = shared("data/ifc")
needs_ifc = pytest.mark.skipif(not IFC.is_dir(), reason=f"{IFC} (../shared/data/ifc) is absent")
