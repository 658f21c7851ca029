"""The README.md written next to a generated sample: what each file holds and how to read it.

Written in English with the Chinese survey terms, because the same folder is read by the
bureau's surveyors and by importer developers.  It holds counts, never sizes or hashes (those
are in manifest.json), so it can be hashed itself.
"""

from __future__ import annotations

from cimtwin.samples.components import DEPARTMENTS
from cimtwin.samples.network import DEPTH_RANGE
from cimtwin.samples.spec import MINZHI_STREET_CODE, STORAGE_EPSG, VERTICAL_DATUM

NETWORKS = [
    ("JS / JP", "给水-配水 distribution mains", "+6 m", "top", "深圳市水务集团"),
    ("JS / SS", "给水-输水 transmission main (main roads)", "+13 m", "top", "深圳市水务集团"),
    ("PS / YS", "排水-雨水 storm (gravity, tree)", "+3 m", "invert", "龙华区水务局"),
    ("PS / WS", "排水-污水 sewage (gravity, tree)", "-3 m", "invert", "深圳市水务集团"),
    ("RQ / TR", "燃气-天然气 natural gas (中压/低压)", "-6 m", "top", "深圳燃气"),
    ("DL / GD", "电力-供电 10/20 kV duct banks (main roads)", "+9 m", "top", "深圳供电局"),
    ("TX / XX", "通信-信息网络 telecom duct banks", "-9 m", "top", "中国电信/移动/联通, 天威视讯"),
]

POINT_DOC = [
    (
        "物探点号",
        "survey point number: network prefix + sequence (JS0001, YS0001, ...), unique in the file",
    ),
    ("管线类别", "CJJ 61 major type letters (JS, PS, RQ, DL, TX)"),
    ("管线小类", "CJJ 61 minor type letters (JP, SS, YS, WS, TR, GD, XX)"),
    (
        "特征",
        "feature: 直线点, 三通, 四通, 弯头, 变径, 预留口, 出地, or empty for a plain "
        "appurtenance point",
    ),
    ("附属物", "appurtenance: 阀门, 消防栓, 雨水井, 污水井, 出水口, 电力井, 通信井, or empty"),
    ("X", "**northing** (北坐标), EPSG:4547, m, 3 decimals (about 2 500 000)"),
    ("Y", "**easting** (东坐标), EPSG:4547, m, 3 decimals (about 500 000)"),
    ("地面高程", "ground elevation, 1985 datum, m, 2 decimals"),
    ("井深", "well depth (ground to chamber bottom) for manholes and valve chambers, m"),
    ("备注", "valves: 开启/关闭 (valve state); outfalls: where the water goes"),
]
LINE_DOC = [
    ("起点点号 / 终点点号", "start / end point numbers (both are in the point table)"),
    ("管线类别 / 管线小类", "as in the point table"),
    ("起点埋深 / 终点埋深", "burial depth at the start / end point, m (see depth convention)"),
    ("管径", "diameter in mm for round pipes; empty for rectangular sections"),
    ("断面", "section 宽X高 in mm (e.g. 800X400) for duct banks and box culverts; else empty"),
    ("材质", "material, name from the CJJ 61 Appendix C.0.1 dictionary"),
    ("埋设方式", "burial method, name from the CJJ 61 C.0.2 dictionary (直埋, 管块, 管沟)"),
    ("权属单位", "owner"),
    ("建设年代", "year built"),
    ("压力", "pressure: 0.4MPa / 0.6MPa for water, 中压 / 低压 for gas; empty otherwise"),
    (
        "流向",
        "gravity drainage only: 1 = flows 起点→终点, -1 = flows 终点→起点; empty for "
        "pressure and cable networks",
    ),
    ("电压", "power only: kV"),
    ("电缆条数", "power only: number of cables"),
    ("总孔数 / 占用孔数", "telecom only: duct holes in total / in use"),
    ("道路名称", "road the pipe runs under"),
    ("状态", "status, name from the CJJ 61 C.0.3 dictionary (在用 ...)"),
]
LAYER_DOC = {
    "street": "code (9 digits: county 440309 + 3), name",
    "community": "code (12 = street code + 3), name, street_cd",
    "work_grid": "code (14 = community code + 2), name, comm_cd, area_m2, officer (网格员)",
    "district": "slug, name, kind (business_district, transport_hub, planning_area), descr",
    "parcel": "parcel_cd, land_use (GB 50137 code), area_m2, far_plan (planned plot ratio "
    "容积率), h_limit (height limit, m)",
    "building": "bldg_cd, name, address (路名+号), use, height_m, floors, ug_floors, base_elev "
    "(ground at the footprint centroid, 1985 datum), floor_area (m2), residents "
    "(residential only), build_year, parcel_cd",
    "underground_structure": "code, kind (metro_station, metro_tunnel, underground_passage), "
    "name, top_elev, bot_elev (elevations, 1985 datum, m)",
    "component": "comp_id (16 digits: county + 4-digit class + 6-digit sequence), class_cd, "
    "name, dept_auth (主管), dept_own (权属), dept_mnt (养护), status "
    "(完好/破损/丢失/占用), elev (ground, m)",
}


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _city_note(city: dict | None) -> list[str]:
    """What a district folder of a simulated city differs in from the standalone sample."""
    if city is None:
        return []
    return [
        f"This folder is district {city['index'] + 1} of a simulated city (any N >= "
        f"{city['index'] + 1} in the command above): "
        f"the same layout generated with seed {city['district_seed']} and centred at E "
        f"{city['centre'][0]:.0f}, N {city['centre'][1]:.0f}; every street, community, grid, "
        f"component, parcel and building code carries county {city['county']} "
        f"({city['county_name']}) instead of 440309, incident ids start with "
        f"`{city['abbr']}-`. Place names are the template's.",
        "",
    ]


def render(meta: dict) -> str:
    """README text for a generated folder; ``meta`` comes from the generator."""
    c = meta["counts"]
    dirty = meta["dirty"]
    title = "North Station synthetic CIM sample"
    if dirty:
        title += " with planted defects"
    lines = [
        f"# {title} (scale `{meta['scale']}`, seed {meta['seed']})",
        "",
        "**Everything in this folder is synthetic.** It imitates a survey delivery for the "
        "Shenzhen North Station (深圳北站) district in 民治街道, 龙华区 (county 440309): roads, "
        "work grids, parcels, buildings, underground pipelines, city components (城市部件) and "
        "incidents. Names, codes, addresses, people and numbers are invented; only the "
        "station's position and size follow public facts.",
        "",
        f"Regenerate with `{meta['command']}` (same seed: byte-identical files).",
        "",
        *_city_note(meta.get("city")),
        "## Coordinate reference",
        "",
        f"- Horizontal: CGCS2000 / 3-degree Gauss-Kruger CM 114E, **EPSG:{STORAGE_EPSG}**, "
        "metres. GIS layers store x = easting, y = northing.",
        "- Survey tables follow the surveying convention: **X = northing (北坐标, about "
        "2 500 000 m), Y = easting (东坐标, about 500 000 m)**.",
        f"- Heights: {VERTICAL_DATUM} (1985国家高程基准), metres. Every ground elevation in every "
        "file comes from the same smooth terrain function (about 70-80 m around the station, "
        "falling gently to the south-west).",
        "- incidents.geojson: RFC 7946, longitude/latitude (CRS84), 7 decimals (about 1 cm).",
        "",
        "## Files",
        "",
    ]
    lines += _table(
        ["path", "content", "count"], [[f"`{f[0]}`", f[1], f[2]] for f in meta["files_doc"]]
    )
    lines += [
        "",
        "## Pipeline survey tables (CJJ 61-2017)",
        "",
        "`pipelines/points.csv` + `pipelines/lines.csv` (UTF-8, no BOM, `\\n`), the same rows "
        "in `points_gbk.csv` / `lines_gbk.csv` (GBK) and in `pipelines.xlsx` (sheets 管线点 "
        "and 管线段).",
        "",
        "**Depth convention (埋深).** Depth is measured from the ground to the pipe **top** "
        "(管顶) for pressure pipes and cable duct banks (JS, RQ, DL, TX) and to the pipe "
        "**invert** (管内底) for gravity drainage (PS: YS, WS). Elevation = 地面高程 - 埋深. "
        "A point has one depth, shared by every line that ends at it.",
        "",
    ]
    lines += _table(
        ["network", "what", "offset from road centre line", "depth to", "range (m)", "owner"],
        [
            [
                n[0],
                n[1],
                n[2],
                n[3],
                "{:.1f}-{:.1f}".format(*DEPTH_RANGE[n[0].split(" / ")[1]]),
                n[4],
            ]
            for n in NETWORKS
        ],
    )
    lines += [
        "",
        "Gravity drainage forms trees: pipes on E-W roads flow west to a trunk on the "
        "catchment's westmost N-S road, which flows south to an outfall (出水口); other "
        "stretches start at a head manhole a few metres from the upstream intersection. "
        "Inverts fall in the flow direction on every pipe (slope >= 0.3 %) and diameters grow "
        "downstream (storm trunks may be a 2000X1500 box culvert, 管沟). Most lines are "
        "written upstream-first with 流向 1; a few are written with start and end swapped "
        "and 流向 -1.",
        "",
        "Water mains carry a valve (阀门) on every arm 6-10 m from each junction, and a "
        "hydrant (消防栓) every ~120 m on a 3-5 m branch from a tee (三通). Power and "
        "telecom duct banks have a manhole (电力井 / 通信井) every <= 60 m; other straight "
        "runs have a survey point every <= 75 m.",
        "",
        "Point table columns:",
        "",
    ]
    lines += _table(["column", "meaning"], [list(r) for r in POINT_DOC])
    lines += ["", "Line table columns:", ""]
    lines += _table(["column", "meaning"], [list(r) for r in LINE_DOC])
    lines += [
        "",
        "Lengths (km): " + ", ".join(f"{k} {v:.2f}" for k, v in meta["pipeline_km"].items()),
        "",
    ]
    lines += [
        "## GIS layers",
        "",
        "GeoPackages in `gpkg/`, Shapefiles (UTF-8 `.cpg`, `.prj`) in `shp/`. Polygons are "
        "MultiPolygon. Field names are at most 10 characters so Shapefiles keep them. Grid "
        "codes are not written into parcels, buildings or components: an importer assigns "
        "them by location.",
        "",
    ]
    lines += _table(["layer", "fields"], [[f"`{k}`", v] for k, v in LAYER_DOC.items()])
    lines += [
        "",
        "Components are points except 交通护栏 (lines, median barriers) and 绿地 "
        "(polygons): `gpkg/components.gpkg` holds all three in one layer; the Shapefiles "
        "split them into `component.shp` (points), `component_line.shp` and "
        "`component_poly.shp`. Manhole, valve and hydrant components sit exactly on the "
        "survey point they cover; the point number is in their name.",
        "",
    ]
    lines += _table(["class_cd", "name", "count"], [list(r) for r in meta["component_classes"]])
    lines += ["", "Department codes (invented, also in `departments.csv`):", ""]
    lines += _table(["code", "name"], [[k, v] for k, v in DEPARTMENTS.items()])
    if meta.get("bim"):
        lines += ["", *_bim_section(meta["bim"])]
    lines += ["", "## Counts", ""]
    lines += _table(["item", "count"], [[k, v] for k, v in c.items()])
    lines += [
        "",
        "## Synthetic codes",
        "",
        f"- Street code `{MINZHI_STREET_CODE}` for 民治街道 is **synthetic** (public sources "
        "disagree on the real one); community (12-digit) and work-grid (14-digit) codes extend "
        "it. Other street codes in the district scale are synthetic too.",
        "- Component class codes come from the shipped dictionary "
        "(`cimtwin/reference/city_component_codes.csv`); department codes are invented.",
        "",
    ]
    if dirty:
        lines += [
            "## Planted defects",
            "",
            "Listed machine-readably in `defects.json`. Rows are 1-based data rows (the "
            "header is not counted: file line = row + 1).",
            "",
        ]
        lines += _table(
            ["id", "file", "row / feature", "rule", "defect"],
            [
                [
                    d["id"],
                    f"`{d['file']}`",
                    ", ".join(str(r) for r in d["rows"]) if "rows" in d else d.get("feature", "-"),
                    d["rule"],
                    d["description"],
                ]
                for d in meta["defects"]
            ],
        )
        lines.append("")
    return "\n".join(lines)


def _bim_section(b: dict) -> list[str]:
    """What the sample's IFC model is and how it is placed."""
    e, n = b["origin"]
    turn = "east" if b["axis"][0] > 0.5 else "north"
    return [
        "## BIM model",
        "",
        f"`bim/{b['code']}.ifc` (IFC4, metres) models {b['name']} ({b['code']}), "
        f"{b['floors']} storeys of {b['storey_h']:g} m on its {b['length']:g} x "
        f"{b['width']:g} m footprint: per storey a slab, exterior and interior walls "
        "(Pset_WallCommon), a corridor with rooms on both sides (IfcSpace with "
        "Qto_SpaceBaseQuantities.NetFloorArea), doors and windows as boxes in the walls and a "
        "stair in the stair room; colours as IfcSurfaceStyle. Georeferenced by IfcMapConversion "
        f"into IfcProjectedCRS EPSG:{STORAGE_EPSG}: the local origin is the footprint corner "
        f"E {e:.3f}, N {n:.3f} at OrthogonalHeight {b['base_elev']:g} m (1985 heights, the "
        f"CRS's VerticalDatum), the local x axis along the footprint's long side ({turn}). "
        "The building keeps its row in `buildings.gpkg`; the model links to it by footprint.",
        "",
    ]
