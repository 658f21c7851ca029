"""The 3D Tiles validator as a test helper: every tileset or glb a test makes goes through
CesiumGS' 3d-tiles-validator (which runs the Khronos glTF validator on each content)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_TOOL = Path("shared") / "tools" / "3d-tiles-validator" / "validate"
#: ../shared beside the clone (CI, /work/main); a git worktree one folder deeper finds it too
VALIDATOR = next(
    (p for p in (ROOT.parent / _TOOL, ROOT.parent.parent / _TOOL) if p.is_file()),
    ROOT.parent / _TOOL,
)


#: where the validator's script installs its npm packages on first use (as the script says)
CACHE = Path(
    os.environ.get("CIMTWIN_TOOLS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "3d-tiles-validator-0.6.1"
)


def _installed() -> None:
    """The first use installs the validator's packages: one test process at a time (under
    pytest-xdist two would run ``npm ci`` into the same folder at once)."""
    if (CACHE / ".installed").exists():
        return
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE.parent / "3d-tiles-validator-0.6.1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (CACHE / ".installed").exists():
            subprocess.run([str(VALIDATOR), "--help"], capture_output=True, timeout=900)


def _run(flag: str, path: Path) -> None:
    if not VALIDATOR.is_file():
        pytest.skip(f"3d-tiles-validator not found at {VALIDATOR} (../shared/tools is absent)")
    _installed()
    proc = subprocess.run(
        [str(VALIDATOR), flag, str(path)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 2:
        pytest.fail(f"the validator could not run on {path}:\n{proc.stderr[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"validator: {path} has errors:\n{_errors(proc.stdout)}")


def _errors(report_text: str) -> str:
    """The ERROR issues of the validator's JSON report (nested causes included), one a line."""
    start = report_text.find("{")
    try:
        report = json.loads(report_text[start:])
    except ValueError:
        return report_text[-5000:]
    lines: list[str] = []

    def walk(issues: list, depth: int) -> None:
        for issue in issues:
            if issue.get("severity") == "ERROR":
                lines.append(
                    "  " * depth + f"{issue.get('type')} at {issue.get('path')}: "
                    f"{issue.get('message')}"
                )
            walk(issue.get("causes", []), depth + 1)

    walk(report.get("issues", []), 0)
    return "\n".join(lines) or report_text[-5000:]


def validate(tileset_json_path: Path | str) -> None:
    """Fail the test unless the tileset (and every content it names) has no error."""
    _run("-t", Path(tileset_json_path))


def validate_glb(glb_path: Path | str) -> None:
    """Fail the test unless the one glb has no error."""
    _run("-f", Path(glb_path))
