"""Shared fixtures: a fresh PostGIS database per test session, dropped afterwards.

Tests talk to the real PostgreSQL named by CIMTWIN_DATABASE_URL (its server, not its database):
the suite creates ``cimtwin_test_<pid>``, migrates it, and drops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine

from cimtwin.db import bootstrap
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
from cimtwin.settings import Settings, get_settings
from cimtwin.spatial.model import SCHEMA

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    base = sqlalchemy_url(get_settings().database_url)
    if not bootstrap.server_reachable(str(base)):
        pytest.exit(
            f"no PostgreSQL at {base.render_as_string(hide_password=True)}: run scripts/setup.sh",
            returncode=3,
        )
    url = base.set(database=f"cimtwin_test_{os.getpid()}").render_as_string(hide_password=False)
    yield bootstrap.recreate_database(url)
    bootstrap.drop_database(url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(sqlalchemy_url(database_url))
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


SAMPLE = ROOT / "data_samples" / "north_station"
DIRTY = ROOT / "data_samples" / "north_station_dirty"


@pytest.fixture(scope="session")
def loaded_sample(database_url: str):
    """The committed North Station sample, imported once into the session database."""
    from cimtwin.samples.loader import load_sample

    return {r.kind: r for r in load_sample(SAMPLE, database_url)}


@pytest.fixture
def chunk_rows(monkeypatch) -> Iterator:
    """``chunk_rows(n)`` sets CIMTWIN_IMPORT_CHUNK_ROWS for the process's settings
    (the import batch and COPY chunk size), restored after the test."""

    def set_rows(n: int) -> None:
        monkeypatch.setenv("CIMTWIN_IMPORT_CHUNK_ROWS", str(n))
        get_settings.cache_clear()

    yield set_rows
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def migrated_template(database_url: str) -> Iterator[str]:
    """One empty database at the head revision, never connected to after: scratch databases
    are copies of it (a file copy, where migrating each one took seconds)."""
    base = sqlalchemy_url(database_url)
    url = base.set(database=f"{base.database}_template").render_as_string(hide_password=False)
    yield bootstrap.recreate_database(url)
    bootstrap.drop_database(url)


@pytest.fixture(scope="module")
def scratch_database(database_url: str, migrated_template: str) -> Iterator[str]:
    """A separate migrated database for tests that change or break data on purpose."""
    base = sqlalchemy_url(database_url)
    url = base.set(database=f"{base.database}_scratch").render_as_string(hide_password=False)
    yield bootstrap.copy_database(migrated_template, url)
    bootstrap.drop_database(url)


@pytest.fixture(scope="session")
def sample_template(database_url: str, migrated_template: str) -> Iterator[str]:
    """The committed sample imported once into a database only ever copied after."""
    from cimtwin.samples.loader import load_sample

    base = sqlalchemy_url(database_url)
    url = base.set(database=f"{base.database}_sample").render_as_string(hide_password=False)
    bootstrap.copy_database(migrated_template, url)
    load_sample(SAMPLE, url)
    yield url
    bootstrap.drop_database(url)


@pytest.fixture(scope="module")
def sample_database(database_url: str, sample_template: str) -> Iterator[str]:
    """A database of the module's own holding the sample, for tests that write to it."""
    base = sqlalchemy_url(database_url)
    url = base.set(database=f"{base.database}_scratch").render_as_string(hide_password=False)
    yield bootstrap.copy_database(sample_template, url)
    bootstrap.drop_database(url)


@pytest.fixture()
def two_county_twin(scratch_database: str) -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """Work grids of two counties side by side (lon/lat corners of their centres given)."""
    lonlat = [(114.040, 22.620), (114.060, 22.620)]
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        for county, (lon, lat) in zip(("440309", "440303"), lonlat, strict=True):
            area = (
                "ST_Multi(ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, 4490), "
                f"(SELECT srid FROM geometry_columns WHERE f_table_schema = '{SCHEMA}' AND "
                "f_table_name = 'work_grid')))"
            )
            box = (lon - 0.005, lat - 0.005, lon + 0.005, lat + 0.005)
            conn.execute(
                f"INSERT INTO {SCHEMA}.street (code, name, geom) VALUES (%s, 's', {area})",
                (county + "001", *box),
            )
            conn.execute(
                f"INSERT INTO {SCHEMA}.community (code, street_code, name, geom) "
                f"VALUES (%s, %s, 'c', {area})",
                (county + "001001", county + "001", *box),
            )
            conn.execute(
                f"INSERT INTO {SCHEMA}.work_grid (code, community_code, name, area_m2, geom) "
                f"VALUES (%s, %s, 'g', 1, {area})",
                (county + "00100101", county + "001001", *box),
            )
    yield scratch_database, lonlat
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        for table in ("building", "work_grid", "community", "street"):
            conn.execute(f"DELETE FROM {SCHEMA}.{table}")


def table_fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Row count and a content hash of every table of the twin: 'unchanged' made checkable."""
    from cimtwin.spatial.model import Base

    out = {}
    with psycopg.connect(libpq_dsn(url)) as conn:
        for table in Base.metadata.sorted_tables:
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY "
                f'md5(t::text)), \'\')) FROM "{SCHEMA}"."{table.name}" t'
            ).fetchone()
            out[table.name] = (row[0], row[1])
    return out


def wait_until_healthy(url: str, timeout_s: float = 30) -> None:
    """Block until ``url``/healthz answers 200 (an API started in a thread or a process)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API at {url} did not answer /healthz within {timeout_s:g} s")


@pytest.fixture(scope="module")
def live_server(settings: Settings, loaded_sample) -> Iterator[str]:
    """The API on a free loopback port in a background thread, for real HTTP clients."""
    from tests.browser import serve

    yield from serve(settings)


#: the dataset of the sample's one BIM model (cimtwin/samples/loader.py) and its tileset's id
SAMPLE_BIM_DATASET = "sample:north_station:ifc"
SAMPLE_BIM_TILESET = "bim-sample_north_station_ifc-b31a4c"
#: the sample's tilesets the viewer tests serve (every source and the BIM model; about 10 s)
TWIN_TILESETS = (
    "terrain",
    "buildings",
    "underground",
    "pipelines",
    "pipeline_points",
    "components",
    SAMPLE_BIM_TILESET,
)


@pytest.fixture(scope="session")
def twin_tiles(settings: Settings, loaded_sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's 3D Tiles, built once per session for every viewer test."""
    from cimtwin.tiles.cli import expand_families
    from cimtwin.tiles.threed.build import build_tileset

    root = tmp_path_factory.mktemp("twin3d")
    # the bim family stands for one tileset per model: here the sample's one
    targets = expand_families([*TWIN_TILESETS[:-1], "bim"], settings.database_url, root)
    assert sorted(targets) == sorted(TWIN_TILESETS), targets
    for tileset_id, target in targets.items():
        result = build_tileset(
            tileset_id, root, database_url=settings.database_url, workers=1, target=target
        )
        assert result.path is not None, tileset_id
    return root


@pytest.fixture(scope="module")
def viewer_site(settings: Settings, twin_tiles: Path) -> Iterator[str]:
    """The API serving the sample's 3D Tiles (and /viewer) on a free loopback port."""
    from tests.browser import serve

    yield from serve(settings.model_copy(update={"tiles_dir": str(twin_tiles)}))


@pytest.fixture(scope="module")
def client(settings: Settings, loaded_sample) -> Iterator:
    """The app over the session database with the sample loaded (modules may override)."""
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


def q(engine: Engine, sql: str, **params) -> list:
    """Rows of a direct SQL query, for comparing API answers with PostGIS."""
    from sqlalchemy import text

    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql), params)]
