"""Imports of different datasets at the same time: both succeed, neither waits forever."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest

from cimtwin.db import bootstrap
from cimtwin.db.engine import sqlalchemy_url
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportOptions, run_import
from tests.conftest import SAMPLE

ROUNDS = 3


@pytest.fixture(scope="module")
def concurrent_db(database_url: str, migrated_template: str) -> Iterator[str]:
    """A database of its own: no component ids from other tests' datasets."""
    base = sqlalchemy_url(database_url)
    url = base.set(database=f"cimtwin_conc_{os.getpid()}").render_as_string(hide_password=False)
    yield bootstrap.copy_database(migrated_template, url)
    bootstrap.drop_database(url)


def _halves(tmp: Path) -> list[Path]:
    """The sample's components split in two files with disjoint ids (two datasets)."""
    frame = pyogrio.read_dataframe(SAMPLE / "gpkg" / "components.gpkg")
    out = []
    for i, part in enumerate((frame.iloc[::2], frame.iloc[1::2])):
        path = tmp / f"components_{i}.gpkg"
        pyogrio.write_dataframe(part, path, layer="component")
        out.append(path)
    return out


def _import_together(files: list[Path], url: str) -> tuple[dict, list]:
    """One thread per file, released at the same moment; results and errors by file."""
    jobs = [
        ("components", files[i], ImportOptions(dataset=f"conc-{i}", replace=True))
        for i in range(len(files))
    ]
    return _run_together(jobs, url)


def _run_together(jobs: list[tuple[str, Path, ImportOptions]], url: str) -> tuple[dict, list]:
    """One thread per (kind, file, options), released at the same moment."""
    start = threading.Barrier(len(jobs))
    results, errors = {}, []

    def go(i: int) -> None:
        kind, path, options = jobs[i]
        try:
            start.wait(30)
            results[i] = run_import(importer_for(kind), [path], options, url)
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, errors


def test_two_component_imports_into_different_datasets_both_succeed(
    concurrent_db: str,
    tmp_path: Path,
) -> None:
    """Both imports create and attach a partition of city_component and insert their batch
    row; taken in different orders, those locks deadlocked PostgreSQL every time. Rounds
    after the first also drop the partitions they replace."""
    files = _halves(tmp_path)
    for attempt in range(ROUNDS):
        results, errors = _import_together(files, concurrent_db)
        assert errors == [], f"attempt {attempt + 1}: {errors}"
        assert [results[i].status for i in range(2)] == ["succeeded", "succeeded"]
        assert results[0].counts["city_component"] + results[1].counts["city_component"] == 5452


def test_network_reimport_valves_and_components_at_once(concurrent_db: str, tmp_path: Path):
    """A network re-import (partition swap), a valve layer import on that network and a
    component import, released together three times: all succeed, and every valve ends on
    the network's current batch (the re-import moved them, or they were placed after it)."""
    import psycopg
    import wntr

    from cimtwin.db.engine import libpq_dsn

    net3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
    net = ImportOptions(
        dataset="conc-net", crs="EPSG:4547", local_transform="500000,2500000,0,-695200"
    )
    run_import(importer_for("pipelines"), [net3], net, concurrent_db)
    layer = wntr.network.layer.generate_valve_layer(
        wntr.network.WaterNetworkModel(str(net3)), "strategic", 2, seed=3
    )
    layer.to_csv(tmp_path / "valves.csv")
    files = _halves(tmp_path)
    for attempt in range(ROUNDS):
        net.replace = True
        jobs = [
            ("pipelines", net3, net),
            ("valves", tmp_path / "valves.csv", ImportOptions(dataset="conc-net", replace=True)),
            ("components", files[0], ImportOptions(dataset="conc-0", replace=True)),
        ]
        results, errors = _run_together(jobs, concurrent_db)
        assert errors == [], f"attempt {attempt + 1}: {errors}"
        assert all(r.status == "succeeded" for r in results.values())
        with psycopg.connect(libpq_dsn(concurrent_db)) as conn:
            batches = conn.execute(
                "SELECT network_batch_id, count(*) FROM cim.pipeline_valve GROUP BY 1"
            ).fetchall()
        assert batches == [(results[0].batch_id, len(layer))], attempt
