#!/usr/bin/env bash
# The main job: set up the machine and database, make sure the North Station sample is there,
# import it into PostGIS, serve the API (vector tiles are rendered and cached on request).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
CIM=.venv/bin/cimtwin
SAMPLE=data_samples/north_station
[ -f "$SAMPLE/manifest.json" ] || $CIM samples generate "$SAMPLE"
$CIM samples load "$SAMPLE"   # each layer all-or-nothing; unchanged layers are skipped
echo "[run] serving on http://${CIMTWIN_HOST:-127.0.0.1}:${CIMTWIN_PORT:-8000} (docs at /docs, health at /healthz)"
exec $CIM serve
