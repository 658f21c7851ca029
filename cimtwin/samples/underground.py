"""Underground structures: metro line 5 under the station and a pedestrian passage.

Line 5 runs north-south under the road through the station node, 10-22 m below ground; the
tunnel is cut into one row per block so each row's top/bottom elevations follow the terrain.
The station box (220 m x 22 m, 17 m deep) sits under the hall, where no pipes run.
"""

from __future__ import annotations

import geopandas as gpd
import shapely

from cimtwin.samples.layout import Lattice, Terrain, round_rect
from cimtwin.samples.spec import STORAGE_EPSG

BOX_LEN, BOX_WIDTH, BOX_DEPTH = 220.0, 22.0, 17.0
TUNNEL_WIDTH, TUNNEL_TOP, TUNNEL_BOTTOM = 12.0, 10.0, 22.0


def build_underground(lat: Lattice, terrain: Terrain) -> gpd.GeoDataFrame:
    """Metro station box, tunnel sections north and south of it, the east-plaza passage."""
    rows: list[tuple] = []
    x = float(lat.xs[lat.station_node[0]])
    cy = lat.cy
    ey = lat.ext_ys()

    def add(
        code: str,
        kind: str,
        name: str,
        rect: tuple[float, float, float, float],
        top: float,
        bottom: float,
    ) -> None:
        g = terrain.ground((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
        rect = round_rect(rect)
        rows.append(
            (
                code,
                kind,
                name,
                round(g - top, 2),
                round(g - bottom, 2),
                shapely.MultiPolygon([shapely.box(*rect)]),
            )
        )

    add(
        "UG-M5-STN01",
        "metro_station",
        "地铁5号线深圳北站车站主体",
        (x - BOX_WIDTH / 2, cy - BOX_LEN / 2, x + BOX_WIDTH / 2, cy + BOX_LEN / 2),
        2.0,
        BOX_DEPTH,
    )
    inner = [float(v) for v in lat.ys[1:-1]]
    north = [cy + BOX_LEN / 2] + [v for v in inner if v > cy + BOX_LEN / 2 + 30] + [float(ey[-1])]
    for k in range(len(north) - 1):
        add(
            f"UG-M5-N{k + 1:02d}",
            "metro_tunnel",
            f"地铁5号线深圳北站—长岭陂站区间第{k + 1}段",
            (x - TUNNEL_WIDTH / 2, north[k], x + TUNNEL_WIDTH / 2, north[k + 1]),
            TUNNEL_TOP,
            TUNNEL_BOTTOM,
        )
    south = [cy - BOX_LEN / 2] + [v for v in inner[::-1] if v < cy - BOX_LEN / 2 - 30]
    south.append(float(ey[0]))
    for k in range(len(south) - 1):
        add(
            f"UG-M5-S{k + 1:02d}",
            "metro_tunnel",
            f"地铁5号线深圳北站—民治站区间第{k + 1}段",
            (x - TUNNEL_WIDTH / 2, south[k + 1], x + TUNNEL_WIDTH / 2, south[k]),
            TUNNEL_TOP,
            TUNNEL_BOTTOM,
        )
    x0 = lat.cx + 205.0
    add(
        "UG-PAS01",
        "underground_passage",
        "深圳北站东广场地下通道",
        (x0, cy + 20.0, x0 + 60.0, cy + 30.0),
        1.5,
        6.5,
    )
    return gpd.GeoDataFrame(
        {
            "code": [lat.county.local(r[0]) for r in rows],
            "kind": [r[1] for r in rows],
            "name": [r[2] for r in rows],
            "top_elev": [r[3] for r in rows],
            "bot_elev": [r[4] for r in rows],
        },
        geometry=[r[5] for r in rows],
        crs=f"EPSG:{STORAGE_EPSG}",
    )
