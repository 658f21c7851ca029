#!/usr/bin/env bash
# Time, output size and peak memory of generating the district-scale sample.
#   bash benchmarks/generate_district.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/data/district}"
rm -rf "$out"
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f "wall %e s, peak RSS %M KiB" .venv/bin/cimtwin samples generate "$out" --scale district
else
  time .venv/bin/cimtwin samples generate "$out" --scale district
fi
du -sh "$out"
