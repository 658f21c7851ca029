"""The static vector-tile export on Dask distributed: rendered in this process and on a
LocalCluster of 2 workers, the PMTiles and MBTiles archives are the same bytes, and the
tiles were rendered by the workers (each opened its own database connection)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cimtwin.settings import Settings

LAYERS = ["pipelines", "components", "grids", "buildings"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_on_two_dask_workers_writes_the_same_archive(
    settings: Settings, loaded_sample, tmp_path: Path
) -> None:
    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles import cluster
    from cimtwin.tiles.export import export

    url = settings.database_url
    here = export(LAYERS, 13, 17, tmp_path / "here.pmtiles", url, workers=1)
    steps: list[int] = []
    two = export(
        LAYERS,
        13,
        17,
        tmp_path / "two.pmtiles",
        url,
        on_tile=lambda: steps.append(1),
        workers=2,
        tiles_per_job=8,
    )
    assert here == two and here["tiles_written"] > 8
    assert len(steps) == two["tiles_visited"]  # the progress bar saw every tile
    assert _sha(tmp_path / "two.pmtiles") == _sha(tmp_path / "here.pmtiles")

    client = cluster.client_for(2)  # the LocalCluster the export started (or found), kept

    def opened() -> list[str]:
        from cimtwin.tiles import cluster as worker_side

        return sorted(worker_side.WORKER_CONNECTIONS)

    per_worker = client.run(opened)
    assert len(per_worker) == 2
    assert all(libpq_dsn(url) in dsns for dsns in per_worker.values()), per_worker

    export(["components"], 15, 16, tmp_path / "here.mbtiles", url, workers=1)
    export(["components"], 15, 16, tmp_path / "two.mbtiles", url, workers=2, tiles_per_job=4)
    import sqlite3

    def tiles(path: Path) -> list[tuple]:
        with sqlite3.connect(path) as db:
            return db.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles ORDER BY 1, 2, 3"
            ).fetchall()

    assert tiles(tmp_path / "two.mbtiles") == tiles(tmp_path / "here.mbtiles")
