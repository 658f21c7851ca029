"""Fixed facts and per-scale parameters of the synthetic North Station district.

Everything that differs between the committed ``sample``, the benchmark ``district`` and the
small ``mini`` layout used for the defect sample lives in one :class:`ScaleSpec`, so the
generators below stay scale-agnostic.  Random draws come from named sub-streams of the seed:
changing how one module draws numbers never shifts the numbers another module gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COUNTY_CODE = "440309"  # 龙华区 (GB/T 2260)
# Synthetic street code for 民治街道: public sources disagree on the real one (see README).
MINZHI_STREET_CODE = COUNTY_CODE + "002"
STORAGE_EPSG = 4547  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
VERTICAL_DATUM = "1985 National Height Datum (EPSG:5737)"
STATION_LON, STATION_LAT = 114.02389, 22.61194
HALL_WE, HALL_NS, HALL_HEIGHT = 410.0, 205.0, 43.6
HALL_FLOOR_AREA = 180_000.0
DEFAULT_SEED = 20261123
# Fixed timestamps written into files whose formats want one (GeoPackage, DBF, XLSX).
FIXED_ISO_DATE = "2026-01-01T00:00:00.000Z"
FIXED_DATE_TUPLE = (2026, 1, 1, 0, 0, 0)
# Incidents are dated backwards from here (never from the clock).
INCIDENT_EPOCH = "2026-11-22T08:00:00+08:00"
# North Station business district extents (approximate, from the domain notes).
CORE_EXTENT = (114.0119, 22.6008, 114.0359, 22.6231)
PLAN_EXTENT = (114.0065, 22.5958, 114.0412, 22.6281)


@dataclass(frozen=True)
class ScaleSpec:
    """Parameters of one layout scale."""

    name: str
    nx: int  # blocks west-east
    ny: int  # blocks south-north
    block_w: float  # mean block width (E-W), road centre line to centre line
    block_h: float  # mean block height (N-S)
    jitter: float  # +- random variation of each block dimension
    main_every: int  # every n-th road line (counted from the station) is a main road
    grid_blocks: tuple[int, int]  # blocks per work grid (x, y)
    street_split: tuple[int, int]  # streets as columns x rows of grid groups
    community_split: tuple[tuple[int, int], ...]  # per street: communities cols x rows
    catchment_blocks: tuple[int, int]  # drainage catchment size in blocks (x, y)
    tree_spacing: float  # street trees, per road side (m)
    lamp_spacing: float  # street lamps, alternating sides (m)
    gully_spacing: float  # rain gullies, per road side (m)
    bin_spacing: float  # litter bins, one side (m)
    n_incidents: int
    parcels_per_block: tuple[float, float, float, float]  # P(1..4 parcels)
    building_scale: float  # multiplies the per-use building counts


SCALES: dict[str, ScaleSpec] = {
    "sample": ScaleSpec(
        name="sample",
        nx=10,
        ny=6,
        block_w=160.0,
        block_h=200.0,
        jitter=10.0,
        main_every=3,
        grid_blocks=(1, 1),
        street_split=(1, 1),
        community_split=((3, 2),),
        catchment_blocks=(4, 3),
        tree_spacing=30.0,
        lamp_spacing=35.0,
        gully_spacing=60.0,
        bin_spacing=150.0,
        n_incidents=40,
        parcels_per_block=(0.15, 0.35, 0.25, 0.25),
        building_scale=0.88,
    ),
    "district": ScaleSpec(
        name="district",
        nx=82,
        ny=82,
        block_w=150.0,
        block_h=150.0,
        jitter=8.0,
        main_every=4,
        grid_blocks=(2, 2),
        street_split=(5, 2),
        community_split=((3, 3),) * 8 + ((2, 5),) * 2,
        catchment_blocks=(4, 4),
        tree_spacing=30.0,
        lamp_spacing=35.0,
        gully_spacing=60.0,
        bin_spacing=150.0,
        n_incidents=2000,
        parcels_per_block=(0.3, 0.4, 0.2, 0.1),
        building_scale=0.61,
    ),
    "mini": ScaleSpec(
        name="mini",
        nx=6,
        ny=4,
        block_w=160.0,
        block_h=200.0,
        jitter=10.0,
        main_every=3,
        grid_blocks=(1, 1),
        street_split=(1, 1),
        community_split=((2, 1),),
        catchment_blocks=(3, 4),
        tree_spacing=40.0,
        lamp_spacing=35.0,
        gully_spacing=80.0,
        bin_spacing=200.0,
        n_incidents=12,
        parcels_per_block=(0.3, 0.4, 0.2, 0.1),
        building_scale=1.0,
    ),
}

PUBLIC_SCALES = ("sample", "district")


@dataclass(frozen=True)
class County:
    """A county-level district (区) whose GB/T 2260 code prefixes every code a sample writes:
    street and grid codes, component ids, parcel and building codes; its abbreviation prefixes
    incident ids.  Codes only unique inside one district (underground structures, named
    areas) carry the county code too, except for Longhua, the standalone sample's own."""

    code: str
    name: str
    slug: str
    abbr: str

    def local(self, key: str, sep: str = "-") -> str:
        """``key`` made unique across the city: Longhua's own keys stay as they were."""
        return key if self.code == COUNTY_CODE else f"{self.code}{sep}{key}"


#: Shenzhen's ten districts (GB/T 2260), in the order `--scale city --districts N` uses them.
SHENZHEN: tuple[County, ...] = (
    County("440303", "罗湖区", "luohu", "LU"),
    County("440304", "福田区", "futian", "FT"),
    County("440305", "南山区", "nanshan", "NS"),
    County("440306", "宝安区", "baoan", "BA"),
    County("440307", "龙岗区", "longgang", "LG"),
    County("440308", "盐田区", "yantian", "YT"),
    County("440309", "龙华区", "longhua", "LH"),
    County("440310", "坪山区", "pingshan", "PS"),
    County("440311", "光明区", "guangming", "GM"),
    County("440343", "大鹏新区", "dapeng", "DP"),
)
LONGHUA = next(c for c in SHENZHEN if c.code == COUNTY_CODE)

# Stable ids of the random sub-streams; append new names, never renumber.
_STREAMS = {
    "layout": 1,
    "terrain": 2,
    "admin": 3,
    "landuse": 4,
    "buildings": 5,
    "underground": 6,
    "water": 10,
    "gas": 11,
    "power": 12,
    "telecom": 13,
    "storm": 14,
    "sewage": 15,
    "components": 20,
    "incidents": 21,
    "dirty": 22,
    "names": 23,
}


def substream(seed: int, name: str) -> np.random.Generator:
    """An independent generator for one part of the sample, derived from the seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS[name],)))
