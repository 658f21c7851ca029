"""Runtime configuration, read from ``CIMTWIN_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cimtwin"


def _slots(default: int, description: str) -> Any:
    """A concurrency bound: how many of a kind of heavy request run at once."""
    return Field(default, ge=1, description=description)


def _turn_wait(default: float, what: str) -> Any:
    """How long a request bounded by :func:`_slots` waits for its turn."""
    return Field(default, gt=0, description=f"how long {what} waits for its turn before a 503")


class Settings(BaseSettings):
    """Everything a deployment may change without touching code."""

    model_config = SettingsConfigDict(env_prefix="CIMTWIN_", env_file=".env", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="PostgreSQL/PostGIS connection URL")
    database_replica_urls: str = Field(
        "",
        description="streaming replicas of the database (comma-separated URLs): GET "
        "requests read on them in turn while they are healthy and caught up; writes, "
        "keys, incidents and change notifications stay on the primary",
    )
    db_schema: str = Field(
        "cim", pattern=r"^[a-z_][a-z0-9_]*$", description="schema holding the twin"
    )
    storage_srid: int = Field(
        4547, description="metric storage CRS (EPSG code); fixed when the schema is created"
    )
    vertical_datum: str = Field("EPSG:5737", description="height datum of stored Z (1985 national)")
    county_code: str = Field("440309", pattern=r"^\d{6}$", description="GB/T 2260 county code")
    grid_code_digits: int = Field(14, description="work-grid code length: 14 (2-digit) or 15")
    import_chunk_rows: int = Field(
        25_000,
        ge=1,
        description="rows an import formats and sends per COPY chunk; a components import "
        "also reads and checks its layer this many features at a time",
    )
    statement_timeout_ms: int = Field(15000, ge=100, description="per-request SQL time limit")
    pool_size: int = Field(10, ge=1)
    pool_timeout_s: float = Field(5.0, gt=0, description="wait for a free DB connection")
    tile_cache_mb: int = Field(256, ge=0, description="in-memory tile cache; 0 turns it off")
    tile_cache_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0) of a tile cache shared by all API "
        "workers and hosts; unset: each process keeps its own in-memory cache",
    )
    tile_max_features: int = Field(50000, ge=1, description="features per layer per tile")
    tile_db_concurrency: int = Field(
        4,
        ge=0,
        description="tile queries one API process runs at once (PostgreSQL renders "
        "tiles slower when more statements run than it has cores); 0: up to the pool size",
    )
    tile_max_age_s: int = Field(60, ge=0, description="Cache-Control max-age of tiles")
    public_url: str | None = Field(None, description="base URL in styles/TileJSON if proxied")
    trusted_hosts: str = Field(
        "*",
        description="Host header values the service answers (comma-separated, '*.x.org' for "
        "subdomains; '*': any): style and TileJSON URLs come from the Host when public_url "
        "is unset, so a public deployment sets one of the two",
    )
    cors_origins: str = Field(
        "*",
        description="web origins whose pages may call the API (comma-separated, '*' for "
        "any; empty: no CORS headers): map viewers on other hosts load tiles and features",
    )
    geoid: str = Field(
        "egm96_15.gtx",
        description="geoid grid turning storage (1985) heights into ellipsoidal heights for "
        "3D Tiles: a PROJ grid file name or path, or 'none'",
    )
    height_offset_m: float = Field(
        0.0,
        ge=-50,
        le=50,
        description="local 1985 height datum minus the geoid (m), added before the geoid "
        "(published figures near Shenzhen: 0.2 to 0.5 m)",
    )
    tiles_dir: str = Field(
        "var/3dtiles", description="where `cimtwin tiles build-3d` writes the 3D tilesets"
    )
    oblique_workers: int = Field(
        0,
        ge=0,
        le=256,
        description="processes converting an oblique production's tile folders in parallel "
        "(0: one per core)",
    )
    viewer_dir: str | None = Field(
        None, description="folder with the map pages and npm packages (default: ./viewer)"
    )
    open_reads: bool = Field(
        True, description="reads need no API key (writes always need one with the right role)"
    )
    max_body_kb: int = Field(
        1024,
        ge=1,
        description="largest request body (KB) of every route but POST /grids/assign: "
        "413 before it is parsed",
    )
    assign_max_rows: int = Field(200_000, ge=1, description="rows per POST /grids/assign")
    assign_max_body_mb: int = Field(64, ge=1, description="body size of POST /grids/assign")
    bulk_concurrency: int = _slots(
        2,
        "POST /grids/assign requests one API process works on at once (each holds its rows "
        "in memory); the others wait, holding neither body nor connection",
    )
    bulk_wait_s: float = _turn_wait(10, "a bulk assign")
    analysis_concurrency: int = _slots(
        2,
        "network analyses (isolation, trace, clearance, incident context...) one API process "
        "runs at once; lookups and tiles never wait for them",
    )
    analysis_wait_s: float = _turn_wait(30, "an analysis")
    pipeline_graph_dir: str = Field(
        "",
        description="folder where API workers share the pipe network graphs they build "
        "(memory-mapped; default /dev/shm, else the temporary folder); 'off': each worker "
        "keeps its own",
    )
    summary_cache_s: float = Field(300, ge=0, description="grid/district summary cache; 0 off")
    body_timeout_s: float = Field(
        30, gt=0, description="a request body must arrive within this (else 408)"
    )
    header_timeout_s: float = Field(
        10,
        gt=0,
        description="`cimtwin serve` closes a connection whose request headers are not "
        "complete within this (slowloris)",
    )
    access_log: bool = Field(True, description="`cimtwin serve` logs every request")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


@lru_cache
def get_settings() -> Settings:
    return Settings()
