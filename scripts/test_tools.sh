#!/usr/bin/env bash
# The tools the tests check output with, installed before the suite starts: the 3D Tiles
# validator (../shared/tools, beside the clone) installs its npm packages on first use, which
# takes minutes of compiling here (better-sqlite3). Installed inside the suite, one test paid
# for it while a second worker waited on its lock; run here, it overlaps the code checks.
#   bash scripts/test_tools.sh          (make test runs it beside make lint)
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
for v in ../shared/tools/3d-tiles-validator/validate ../../shared/tools/3d-tiles-validator/validate; do
  if [ -x "$v" ]; then
    "$v" --help >/dev/null || { echo "test_tools: the 3D Tiles validator did not install ($v)" >&2; exit 1; }
    echo "[test-tools] 3D Tiles validator ready ($v)"
    exit 0
  fi
done
echo "[test-tools] ../shared/tools/3d-tiles-validator is absent: the tests that validate tilesets will skip"
