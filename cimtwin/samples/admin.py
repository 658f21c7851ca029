"""Street > community > work grid hierarchy and the named districts around the station.

All three levels are built from the same lattice cell edges, so grids tile their community and
communities tile their street exactly (shared vertices, areas add up).  Codes nest: a grid's
14-digit code starts with its community's 12 digits, which start with the street's 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from cimtwin.samples import names
from cimtwin.samples.layout import Lattice, station_xy
from cimtwin.samples.spec import (
    CORE_EXTENT,
    COUNTY_CODE,
    MINZHI_STREET_CODE,
    PLAN_EXTENT,
    STORAGE_EPSG,
    substream,
)
from cimtwin.spatial.crs import transformer


def split(n: int, k: int) -> list[int]:
    """Boundaries of ``k`` contiguous, near-equal parts of ``range(n)``."""
    return [round(n * p / k) for p in range(k + 1)]


def _mpoly(x0: float, y0: float, x1: float, y1: float) -> shapely.MultiPolygon:
    return shapely.MultiPolygon([shapely.box(x0, y0, x1, y1)])


@dataclass
class Admin:
    street: gpd.GeoDataFrame
    community: gpd.GeoDataFrame
    work_grid: gpd.GeoDataFrame
    district: gpd.GeoDataFrame


def _street_codes(n: int, station_street: int, county: str = COUNTY_CODE) -> list[str]:
    """Synthetic street codes; the station's street gets the 民治 code used by every scale
    (in another county, the same street number under that county's code)."""
    minzhi = int(MINZHI_STREET_CODE[-3:])
    others = [c for c in range(1, n + 2) if c != minzhi]
    out = []
    for k in range(n):
        out.append(
            f"{county}{minzhi:03d}" if k == station_street else f"{county}{others.pop(0):03d}"
        )
    return out


def build_admin(lat: Lattice, seed: int) -> Admin:
    """Streets, communities, work grids and named districts for the lattice."""
    spec = lat.spec
    rng = substream(seed, "admin")
    ex, ey = lat.ext_xs(), lat.ext_ys()
    gx, gy = spec.grid_blocks
    ngx, ngy = spec.nx // gx, spec.ny // gy
    # grid g covers blocks [g*gx, (g+1)*gx); the last one takes any remainder
    gxe = [min(g * gx, spec.nx) for g in range(ngx)] + [spec.nx]
    gye = [min(g * gy, spec.ny) for g in range(ngy)] + [spec.ny]
    scols, srows = spec.street_split
    sxb, syb = split(ngx, scols), split(ngy, srows)
    ic, jc = lat.station_node
    station_gx = max(g for g in range(ngx) if gxe[g] <= ic - 1)
    station_gy = max(g for g in range(ngy) if gye[g] <= jc - 1)

    streets_rc = [(r, c) for r in reversed(range(srows)) for c in range(scols)]  # NW first
    station_street = next(
        k
        for k, (r, c) in enumerate(streets_rc)
        if sxb[c] <= station_gx < sxb[c + 1] and syb[r] <= station_gy < syb[r + 1]
    )
    codes = _street_codes(len(streets_rc), station_street, lat.county.code)
    snames = names.street_names(len(streets_rc))
    # 民治 first in the name list: give it to the station's street, the rest in order
    order = [station_street] + [k for k in range(len(streets_rc)) if k != station_street]
    street_name = {k: snames[n] for n, k in enumerate(order)}
    comm_names = names.community_names(rng, sum(a * b for a, b in spec.community_split))
    comm_name_iter = iter(comm_names[1:])

    st_rows, cm_rows, gr_rows = [], [], []
    for k, (r, c) in enumerate(streets_rc):
        gx0, gx1, gy0, gy1 = sxb[c], sxb[c + 1], syb[r], syb[r + 1]
        scode = codes[k]
        st_rows.append(
            (scode, street_name[k], _mpoly(ex[gxe[gx0]], ey[gye[gy0]], ex[gxe[gx1]], ey[gye[gy1]]))
        )
        ccols, crows = spec.community_split[k]
        cxb = [gx0 + v for v in split(gx1 - gx0, ccols)]
        cyb = [gy0 + v for v in split(gy1 - gy0, crows)]
        seq = 0
        for cr in reversed(range(crows)):
            for cc in range(ccols):
                seq += 1
                ccode = f"{scode}{seq:03d}"
                a0, a1, b0, b1 = cxb[cc], cxb[cc + 1], cyb[cr], cyb[cr + 1]
                has_station = a0 <= station_gx < a1 and b0 <= station_gy < b1
                cname = comm_names[0] if has_station else next(comm_name_iter)
                cm_rows.append(
                    (
                        ccode,
                        cname,
                        scode,
                        _mpoly(ex[gxe[a0]], ey[gye[b0]], ex[gxe[a1]], ey[gye[b1]]),
                    )
                )
                gseq = 0
                for b in reversed(range(b0, b1)):
                    for a in range(a0, a1):
                        gseq += 1
                        x0, y0, x1, y1 = ex[gxe[a]], ey[gye[b]], ex[gxe[a + 1]], ey[gye[b + 1]]
                        area = round((x1 - x0) * (y1 - y0), 2)
                        gr_rows.append(
                            (
                                f"{ccode}{gseq:02d}",
                                f"{cname}第{gseq:02d}网格",
                                ccode,
                                area,
                                names.person_name(rng),
                                _mpoly(x0, y0, x1, y1),
                            )
                        )
    crs = f"EPSG:{STORAGE_EPSG}"
    street = gpd.GeoDataFrame(
        {"code": [r[0] for r in st_rows], "name": [r[1] for r in st_rows]},
        geometry=[r[2] for r in st_rows],
        crs=crs,
    )
    community = gpd.GeoDataFrame(
        {
            "code": [r[0] for r in cm_rows],
            "name": [r[1] for r in cm_rows],
            "street_cd": [r[2] for r in cm_rows],
        },
        geometry=[r[3] for r in cm_rows],
        crs=crs,
    )
    grid = gpd.GeoDataFrame(
        {
            "code": [r[0] for r in gr_rows],
            "name": [r[1] for r in gr_rows],
            "comm_cd": [r[2] for r in gr_rows],
            "area_m2": [r[3] for r in gr_rows],
            "officer": [r[4] for r in gr_rows],
        },
        geometry=[r[5] for r in gr_rows],
        crs=crs,
    )
    return Admin(street, community, grid, build_districts(lat))


def _cells_in_extent(lat: Lattice, extent: tuple[float, float, float, float]) -> tuple[int, ...]:
    """Block index range (i0, i1, j0, j1) whose centres fall inside a lon/lat box around the
    North Station, moved with the lattice (a city's other districts sit elsewhere)."""
    tr = transformer(4490, STORAGE_EPSG)
    xs, ys = tr.transform([extent[0], extent[2]], [extent[1], extent[3]])
    sx, sy = station_xy()
    xs, ys = np.asarray(xs) + (lat.cx - sx), np.asarray(ys) + (lat.cy - sy)
    mx = (lat.xs[:-1] + lat.xs[1:]) / 2
    my = (lat.ys[:-1] + lat.ys[1:]) / 2
    ii = np.nonzero((mx >= xs[0]) & (mx <= xs[1]))[0]
    jj = np.nonzero((my >= ys[0]) & (my <= ys[1]))[0]
    return int(ii[0]), int(ii[-1]) + 1, int(jj[0]), int(jj[-1]) + 1


def build_districts(lat: Lattice) -> gpd.GeoDataFrame:
    """North Station core business district, the transport hub, and (if larger) the plan area."""
    ex, ey = lat.ext_xs(), lat.ext_ys()
    i0, i1, j0, j1 = lat.superblock
    hub = (max(i0 - 1, 0), min(i1 + 1, lat.nx), max(j0 - 1, 0), min(j1 + 1, lat.ny))
    core = _cells_in_extent(lat, CORE_EXTENT)
    plan = _cells_in_extent(lat, PLAN_EXTENT)
    rows = [
        (
            "north-station",
            "北站商务区核心区",
            "business_district",
            "深圳北站商务区核心区(合成范围,按公开四至近似取整到街区)",
            core,
        ),
        (
            "north-station-hub",
            "深圳北站综合交通枢纽",
            "transport_hub",
            "高铁站房、地铁5号线车站及周边一圈街区(合成范围)",
            hub,
        ),
    ]
    if plan != core:
        rows.append(
            (
                "north-station-plan",
                "北站商务区规划范围",
                "planning_area",
                "北站商务区规划范围(合成范围,按公开四至近似取整到街区)",
                plan,
            )
        )
    geoms = [_mpoly(ex[r[4][0]], ey[r[4][2]], ex[r[4][1]], ey[r[4][3]]) for r in rows]
    return gpd.GeoDataFrame(
        {
            "slug": [lat.county.local(r[0]) for r in rows],
            "name": [r[1] for r in rows],
            "kind": [r[2] for r in rows],
            "descr": [r[3] for r in rows],
        },
        geometry=geoms,
        crs=f"EPSG:{STORAGE_EPSG}",
    )
