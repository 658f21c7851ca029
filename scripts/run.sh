#!/usr/bin/env bash
# The main job: set up the machine and database, make sure the North Station sample is there,
# import it into PostGIS, build its 3D Tiles, serve the API (vector tiles are rendered and cached
# on request; the 3D tilesets are served from their files at /3dtiles).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
CIM=.venv/bin/cimtwin
SAMPLE=data_samples/north_station
[ -f "$SAMPLE/manifest.json" ] || $CIM samples generate "$SAMPLE"
$CIM samples load "$SAMPLE"   # each layer all-or-nothing; unchanged layers are skipped
# 3D Tiles of the sample into CIMTWIN_TILES_DIR (default var/3dtiles): the first run builds all,
# later runs only the tiles over data imported since (untouched files are not rewritten)
$CIM tiles build-3d --changed
echo "[run] serving on http://${CIMTWIN_HOST:-127.0.0.1}:${CIMTWIN_PORT:-8000} (docs at /docs, health at /healthz, 3D at /3dtiles)"
exec $CIM serve
