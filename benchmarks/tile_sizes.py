"""Largest vector tile per layer and zoom over the district-scale data (target: <= 500 KB).

Renders every tile that holds data for each layer from its minimum zoom up to --maxzoom with
the same statements the API runs, and prints count, largest size and slowest render per zoom.

    .venv/bin/python benchmarks/tile_sizes.py [--db cimtwin_bench_tiles] [--maxzoom 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402
from cimtwin.spatial.catalogue import LAYERS  # noqa: E402
from cimtwin.tiles.export import data_bounds, tile_list  # noqa: E402
from cimtwin.tiles.mvt import TileRequest, layer_query  # noqa: E402

LIMIT_KB = 500
MAX_TILES_PER_ZOOM = 400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="cimtwin_bench_tiles", help="database holding the data")
    ap.add_argument("--maxzoom", type=int, default=16)
    args = ap.parse_args()
    url = sqlalchemy_url().set(database=args.db).render_as_string(hide_password=False)
    worst = 0.0
    print(f"{'layer':<16}{'z':>3}{'tiles':>7}{'max KB':>9}{'max ms':>8}  largest tile")
    with psycopg.connect(libpq_dsn(url)) as conn:
        for layer in LAYERS:
            bounds = data_bounds(conn, [layer])
            if bounds is None:
                continue
            for z in range(layer.minzoom, args.maxzoom + 1):
                tiles = tile_list(bounds, z, z)
                if len(tiles) > MAX_TILES_PER_ZOOM:  # dense zooms: an even sample
                    step = len(tiles) / MAX_TILES_PER_ZOOM
                    tiles = [tiles[int(i * step)] for i in range(MAX_TILES_PER_ZOOM)]
                big, slow, where = 0, 0.0, ""
                for t in tiles:
                    q = layer_query(layer, TileRequest(t.z, t.x, t.y), 50_000)
                    t0 = time.perf_counter()
                    body = conn.execute(q[0], q[1], prepare=True).fetchone()[0] or b""
                    slow = max(slow, time.perf_counter() - t0)
                    if len(body) > big:
                        big, where = len(body), f"{t.z}/{t.x}/{t.y}"
                worst = max(worst, big / 1024)
                flag = "  OVER" if big / 1024 > LIMIT_KB else ""
                print(
                    f"{layer.id:<16}{z:>3}{len(tiles):>7}{big / 1024:>9.1f}{slow * 1000:>8.0f}"
                    f"  {where}{flag}",
                    flush=True,
                )
    print(f"largest tile: {worst:.1f} KB (target <= {LIMIT_KB} KB)")


if __name__ == "__main__":
    main()
