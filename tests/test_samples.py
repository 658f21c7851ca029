"""Synthetic sample generator: determinism, committed samples, and the survey/GIS rules they obey.

No database needed.  The sample is generated once per session into a temp folder; every check
reads the files back the way an importer would.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import zipfile
from collections import Counter, defaultdict
from contextlib import closing
from datetime import datetime
from pathlib import Path

import numpy as np
import openpyxl
import pyogrio
import pytest
import shapely
from typer.testing import CliRunner

from cimtwin.errors import UserError
from cimtwin.reference import attribute_codes, component_classes, land_use_classes, pipeline_types
from cimtwin.samples.cli import app
from cimtwin.samples.generator import generate
from cimtwin.samples.spec import DEFAULT_SEED, HALL_NS, HALL_WE, STATION_LAT, STATION_LON
from cimtwin.spatial.crs import transformer
from cimtwin.spatial.incident import INCIDENT_STATUSES

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "data_samples"
REGEN = "cimtwin samples generate data_samples/north_station (and --dirty into _dirty)"
GRAVITY = ("YS", "WS")
DEPTHS = {
    "JP": (1.0, 1.5),
    "SS": (1.0, 1.5),
    "TR": (0.8, 1.2),
    "GD": (0.7, 1.0),
    "XX": (0.7, 1.0),
    "YS": (1.5, 5.0),
    "WS": (1.5, 5.0),
}
FEATURES = {"", "直线点", "三通", "四通", "弯头", "变径", "预留口", "出地"}
APPURTENANCES = {"", "阀门", "消防栓", "检修井", "雨水井", "污水井", "出水口", "电力井", "通信井"}
COVER_OF = {
    "0101": ("阀门", ("JP", "SS")),
    "0111": ("阀门", ("TR",)),
    "0103": ("雨水井", ("YS",)),
    "0102": ("污水井", ("WS",)),
    "0105": ("电力井", ("GD",)),
    "0107": ("通信井", ("XX",)),
    "0113": ("消防栓", ("JP",)),
}


# ---------------------------------------------------------------- fixtures and readers


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "north_station"
    generate(out, "sample", DEFAULT_SEED)
    return out


@pytest.fixture(scope="session")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "north_station_dirty"
    generate(out, "sample", DEFAULT_SEED, dirty=True)
    return out


def files(d: Path) -> dict[str, bytes]:
    return {
        p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
    }


def differing(a: Path, b: Path) -> list[str]:
    fa, fb = files(a), files(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def read_csv(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    with open(path, encoding=encoding, newline="") as fh:
        return list(csv.DictReader(fh))


class Survey:
    """Point and line tables of a sample, indexed for the checks."""

    def __init__(self, d: Path) -> None:
        self.points = read_csv(d / "pipelines" / "points.csv")
        self.lines = read_csv(d / "pipelines" / "lines.csv")
        self.by_no = {p["物探点号"]: p for p in self.points}

    def xy(self, no: str) -> tuple[float, float]:
        p = self.by_no[no]
        return float(p["Y"]), float(p["X"])  # easting, northing

    def length(self, ln: dict) -> float:
        (x0, y0), (x1, y1) = self.xy(ln["起点点号"]), self.xy(ln["终点点号"])
        return math.hypot(x1 - x0, y1 - y0)

    def flow(self, ln: dict) -> tuple[str, str, float, float]:
        """(upstream no, downstream no, upstream depth, downstream depth) of a gravity line."""
        a, b = ln["起点点号"], ln["终点点号"]
        da, db = float(ln["起点埋深"]), float(ln["终点埋深"])
        return (a, b, da, db) if ln["流向"] == "1" else (b, a, db, da)

    def invert(self, no: str, depth: float) -> float:
        return float(self.by_no[no]["地面高程"]) - depth


@pytest.fixture(scope="session")
def survey(sample: Path) -> Survey:
    return Survey(sample)


def layers(d: Path) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for g in sorted((d / "gpkg").glob("*.gpkg")):
        out += [(str(g), name) for name, _ in pyogrio.list_layers(g)]
    out += [(str(s), None) for s in sorted((d / "shp").glob("*.shp"))]
    return out


def read(path: str | Path, layer: str | None = None):
    return pyogrio.read_dataframe(path, layer=layer)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(sample: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, "sample", DEFAULT_SEED)
    assert differing(sample, again) == []


def test_other_seed_gives_other_data(sample: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    counts = generate(other, "sample", 7)
    assert counts["buildings"] > 100
    assert "pipelines/points.csv" in differing(sample, other)


def test_format_time_stamps_are_pinned(sample: Path) -> None:
    for dbf in sorted((sample / "shp").glob("*.dbf")):
        assert dbf.read_bytes()[1:4] == bytes([126, 1, 1]), dbf  # 2026-01-01, not today
    for gpkg in sorted((sample / "gpkg").glob("*.gpkg")):
        with closing(sqlite3.connect(gpkg)) as db:
            stamps = {r[0] for r in db.execute("SELECT last_change FROM gpkg_contents")}
        assert stamps == {"2026-01-01T00:00:00.000Z"}, gpkg
    with zipfile.ZipFile(sample / "pipelines/pipelines.xlsx") as z:
        assert {i.date_time for i in z.infolist()} == {(2026, 1, 1, 0, 0, 0)}
        assert z.namelist()[0] == "[Content_Types].xml"
        core = z.read("docProps/core.xml").decode()
        assert core.count("2026-01-01T00:00:00Z") == 2


def test_bim_model_sits_on_its_building(sample: Path) -> None:
    """The one IFC model: IFC4, georeferenced onto its building's footprint corner with the x
    axis along the long side and the base elevation as height; storeys, rooms with areas,
    walls with Pset_WallCommon, styled shapes, unique GUIDs; the header pinned."""
    import ifcopenshell
    import ifcopenshell.util.element as ue

    (path,) = sorted((sample / "bim").glob("*.ifc"))
    head = path.read_text(encoding="utf-8")[:600]
    assert "2026-01-01T00:00:00.000Z" in head and "IfcOpenShell" not in head
    building = read(sample / "gpkg/buildings.gpkg", "building").set_index("bldg_cd")
    b = building.loc[path.stem]
    assert 4 <= b.floors <= 8 and b.use in ("commercial", "office", "government")
    model = ifcopenshell.open(str(path))
    assert model.schema == "IFC4"
    (conv,) = model.by_type("IfcMapConversion")
    assert conv.TargetCRS.Name == "EPSG:4547" and "5737" in conv.TargetCRS.VerticalDatum
    assert conv.OrthogonalHeight == pytest.approx(b.base_elev) and conv.Scale == 1.0
    x0, y0, x1, y1 = b.geometry.bounds
    corners = [(x, y) for x in (x0, x1) for y in (y0, y1)]
    assert min(math.dist((conv.Eastings, conv.Northings), c) for c in corners) < 1e-3
    axis = np.array([conv.XAxisAbscissa, conv.XAxisOrdinate])
    long_side = np.array([1.0, 0.0]) if x1 - x0 >= y1 - y0 else np.array([0.0, 1.0])
    assert abs(axis @ long_side) == pytest.approx(1.0)
    # every corner of every element, mapped by hand, lies within the footprint (windows and
    # doors stand 3 cm proud of the facade)
    a, o = axis
    inside = b.geometry.buffer(0.05)
    for solid in model.by_type("IfcExtrudedAreaSolid"):
        px, py, _ = solid.Position.Location.Coordinates
        p = solid.SweptArea
        for dx, dy in ((0, 0), (p.XDim, 0), (0, p.YDim), (p.XDim, p.YDim)):
            lx, ly = px + dx, py + dy
            e, n = conv.Eastings + a * lx - o * ly, conv.Northings + o * lx + a * ly
            assert inside.covers(shapely.Point(e, n)), (solid, e, n)
    storeys = sorted(model.by_type("IfcBuildingStorey"), key=lambda s: s.Elevation)
    assert len(storeys) == b.floors
    assert storeys[-1].Elevation + b.height_m / b.floors == pytest.approx(b.height_m)
    guids = [e.GlobalId for e in model.by_type("IfcRoot")]
    assert len(guids) == len(set(guids)) and all(len(g) == 22 for g in guids)
    for wall in model.by_type("IfcWall"):
        common = ue.get_psets(wall)["Pset_WallCommon"]
        assert isinstance(common["IsExternal"], bool) and common["FireRating"]
    assert (
        sum(ue.get_psets(w)["Pset_WallCommon"]["IsExternal"] for w in model.by_type("IfcWall"))
        == 4 * b.floors
    )
    spaces = model.by_type("IfcSpace")
    for s in spaces:
        storey = s.Decomposes[0].RelatingObject
        assert s.Name.startswith(storey.Name.removesuffix("F")), s.Name
        assert ue.get_psets(s, qtos_only=True)["Qto_SpaceBaseQuantities"]["NetFloorArea"] > 5
        assert s.LongName and s.ObjectType
    names = {s.Name for s in spaces}
    assert "101 大厅" in names and all(f"{k}11 走廊" in names for k in range(1, b.floors + 1))
    for cls in ("IfcDoor", "IfcWindow", "IfcSlab", "IfcStair"):
        assert len(model.by_type(cls)) >= b.floors, cls
    styled = {i.Item.id() for i in model.by_type("IfcStyledItem")}
    assert styled == {s.id() for s in model.by_type("IfcExtrudedAreaSolid")}
    manifest = json.loads((sample / "manifest.json").read_text(encoding="utf-8"))
    rel = f"bim/{path.name}"
    assert manifest["files"][rel]["count"]["IfcSpace"] == len(spaces)
    assert manifest["counts"]["bim_spaces"] == len(spaces)
    assert f"`{rel}`" in (sample / "README.md").read_text(encoding="utf-8")


GDAL_WRITTEN = {".gpkg", ".shp", ".shx", ".dbf"}


def stale(fresh: Path, committed: Path) -> list[str]:
    """Files whose content differs. What Python writes is compared byte for byte; what GDAL
    writes (GeoPackage, Shapefile) by its features, since another GDAL release may lay out the
    same features in other bytes; the manifest without the hashes of GDAL's files."""
    out = []
    for rel in differing(fresh, committed):
        a, b = fresh / rel, committed / rel
        if not (a.exists() and b.exists()):
            out.append(rel)
        elif a.suffix in GDAL_WRITTEN:
            if a.suffix in (".shx", ".dbf"):
                continue  # compared through the .shp
            for name, _ in pyogrio.list_layers(a):
                fa, fb = read(a, name), read(b, name)
                if not (
                    fa.drop(columns="geometry").equals(fb.drop(columns="geometry"))
                    and shapely.equals_exact(
                        fa.geometry.values, fb.geometry.values, tolerance=0
                    ).all()
                ):
                    out.append(f"{rel}:{name}")
        elif a.name == "manifest.json":
            ma, mb = (json.loads(x.read_text(encoding="utf-8")) for x in (a, b))
            for m in (ma, mb):
                for f, info in m["files"].items():
                    if Path(f).suffix in GDAL_WRITTEN:
                        info.pop("sha256", None)
                        info.pop("bytes", None)
            if ma != mb:
                out.append(rel)
        else:
            out.append(rel)
    return out


def test_committed_sample_is_current(sample: Path) -> None:
    committed = COMMITTED / "north_station"
    assert committed.is_dir(), f"missing {committed}; run {REGEN}"
    assert stale(sample, committed) == [], f"stale committed sample; run {REGEN}"


def test_committed_dirty_sample_is_current(dirty: Path) -> None:
    committed = COMMITTED / "north_station_dirty"
    assert committed.is_dir(), f"missing {committed}; run {REGEN}"
    assert stale(dirty, committed) == [], f"stale committed dirty sample; run {REGEN}"


def test_committed_samples_are_small() -> None:
    total = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert total < 10 * 1024 * 1024


def test_manifest_hashes_and_counts(sample: Path) -> None:
    import hashlib

    manifest = json.loads((sample / "manifest.json").read_text(encoding="utf-8"))
    on_disk = sorted(
        p.relative_to(sample).as_posix()
        for p in sample.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    )
    assert sorted(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        data = (sample / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert len(data) == info["bytes"]
    assert manifest["files"]["pipelines/points.csv"]["count"] == len(
        read_csv(sample / "pipelines/points.csv")
    )
    assert manifest["crs"] == "EPSG:4547" and manifest["seed"] == DEFAULT_SEED


# ---------------------------------------------------------------- GIS layers


def test_every_geometry_valid_and_in_epsg4547(sample: Path) -> None:
    seen = 0
    for path, layer in layers(sample):
        df = read(path, layer)
        assert df.crs is not None and df.crs.to_epsg() == 4547, (path, layer)
        geoms = df.geometry.values
        assert len(geoms) > 0, (path, layer)
        assert shapely.is_valid(geoms).all(), (path, layer)
        assert not shapely.is_empty(geoms).any(), (path, layer)
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        assert 495_000 < x0 < x1 < 510_000 and 2_495_000 < y0 < y1 < 2_510_000, (path, layer)
        if path.endswith(".gpkg") and layer != "component":
            kinds = set(df.geom_type)
            assert kinds <= {"MultiPolygon"}, (path, layer, kinds)
        seen += 1
    assert seen >= 14
    for shp in (sample / "shp").glob("*.shp"):
        assert shp.with_suffix(".prj").is_file() and shp.with_suffix(".cpg").is_file()
        assert shp.with_suffix(".cpg").read_text() == "UTF-8"


def test_field_names_fit_shapefiles(sample: Path) -> None:
    expected = {
        ("admin.gpkg", "work_grid"): ["code", "name", "comm_cd", "area_m2", "officer"],
        ("admin.gpkg", "community"): ["code", "name", "street_cd"],
        ("admin.gpkg", "street"): ["code", "name"],
        ("admin.gpkg", "district"): ["slug", "name", "kind", "descr"],
        ("parcels.gpkg", "parcel"): ["parcel_cd", "land_use", "area_m2", "far_plan", "h_limit"],
        ("buildings.gpkg", "building"): [
            "bldg_cd",
            "name",
            "address",
            "use",
            "height_m",
            "floors",
            "ug_floors",
            "base_elev",
            "floor_area",
            "residents",
            "build_year",
            "parcel_cd",
        ],
        ("buildings.gpkg", "underground_structure"): [
            "code",
            "kind",
            "name",
            "top_elev",
            "bot_elev",
        ],
        ("components.gpkg", "component"): [
            "comp_id",
            "class_cd",
            "name",
            "dept_auth",
            "dept_own",
            "dept_mnt",
            "status",
            "elev",
        ],
    }
    for (f, layer), cols in expected.items():
        df = read(sample / "gpkg" / f, layer)
        assert list(df.columns[:-1]) == cols
        assert all(len(c) <= 10 for c in cols)
    assert (
        list(read(sample / "shp/building.shp").columns[:-1])
        == expected[("buildings.gpkg", "building")]
    )


def test_codes_in_dictionaries(sample: Path, survey: Survey) -> None:
    types = {(t.major_code, t.minor_code) for t in pipeline_types()}
    materials = set(attribute_codes("material").values())
    burials = set(attribute_codes("burial").values())
    statuses = set(attribute_codes("status").values())
    for p in survey.points:
        assert (p["管线类别"], p["管线小类"]) in types
        assert p["特征"] in FEATURES and p["附属物"] in APPURTENANCES
    for ln in survey.lines:
        assert (ln["管线类别"], ln["管线小类"]) in types
        assert ln["材质"] in materials and ln["埋设方式"] in burials and ln["状态"] in statuses
    comps = read(sample / "gpkg/components.gpkg", "component")
    assert set(comps["class_cd"]) <= set(component_classes())
    parcels = read(sample / "gpkg/parcels.gpkg", "parcel")
    assert set(parcels["land_use"]) <= set(land_use_classes())
    assert {"R2", "B2", "S3"} <= set(parcels["land_use"])


def test_component_ids(sample: Path) -> None:
    comps = read(sample / "gpkg/components.gpkg", "component")
    ids = comps["comp_id"]
    assert ids.is_unique
    assert all(len(i) == 16 and i.isdigit() and i.startswith("440309") for i in ids)
    assert (ids.str[6:10] == comps["class_cd"]).all()
    assert 4000 < len(comps) < 7000
    mix = Counter(comps["class_cd"])
    assert mix["0402"] > 1000 and mix["0118"] > 400 and mix["0103"] > 300
    assert set(comps["status"]) <= {"完好", "破损", "丢失", "占用"}
    assert (comps["dept_auth"].str.len() > 0).all()


# ---------------------------------------------------------------- pipeline tables


def test_point_numbers_unique_and_line_ends_exist(survey: Survey) -> None:
    nos = [p["物探点号"] for p in survey.points]
    assert len(nos) == len(set(nos))
    for ln in survey.lines:
        a, b = ln["起点点号"], ln["终点点号"]
        assert a in survey.by_no and b in survey.by_no, ln
        assert a != b
        for no in (a, b):
            assert survey.by_no[no]["管线类别"] == ln["管线类别"]
    keys = Counter(tuple(sorted((ln["起点点号"], ln["终点点号"]))) for ln in survey.lines)
    assert max(keys.values()) == 1  # no duplicate or reversed duplicate segments


def test_survey_convention_and_spacing(survey: Survey) -> None:
    for p in survey.points:
        assert 2_400_000 < float(p["X"]) < 2_600_000  # X is the northing
        assert 400_000 < float(p["Y"]) < 600_000  # Y is the easting
        assert len(p["X"].split(".")[1]) == 3 and len(p["地面高程"].split(".")[1]) == 2
        assert 60.0 < float(p["地面高程"]) < 90.0
    xy = Counter((p["X"], p["Y"]) for p in survey.points)
    assert max(xy.values()) == 1  # no two points (of any networks) coincide
    for ln in survey.lines:
        assert survey.length(ln) <= 75.0 + 1e-6, ln


def test_depth_consistent_at_each_point(survey: Survey) -> None:
    depth: dict[str, set[str]] = defaultdict(set)
    for ln in survey.lines:
        depth[ln["起点点号"]].add(ln["起点埋深"])
        depth[ln["终点点号"]].add(ln["终点埋深"])
    assert all(len(v) == 1 for v in depth.values())


def test_depth_ranges_and_columns(survey: Survey) -> None:
    seen = Counter()
    for ln in survey.lines:
        minor = ln["管线小类"]
        lo, hi = DEPTHS[minor]
        for col in ("起点埋深", "终点埋深"):
            assert lo <= float(ln[col]) <= hi, (minor, ln)
        assert bool(ln["管径"]) != bool(ln["断面"]), ln  # a diameter or a section, not both
        if minor in GRAVITY:
            assert ln["流向"] in ("1", "-1")
        else:
            assert ln["流向"] == ""
        if minor in ("GD", "XX"):
            assert ln["断面"] and ln["埋设方式"] == "管块"
        if minor == "GD":
            assert int(ln["电压"]) in (10, 20) and int(ln["电缆条数"]) > 0
        if minor == "XX":
            assert 0 <= int(ln["占用孔数"]) <= int(ln["总孔数"])
        seen[minor] += 1
    assert set(seen) == set(DEPTHS)


def test_gravity_inverts_fall_with_flow(survey: Survey) -> None:
    flows = Counter()
    for ln in survey.lines:
        if ln["管线小类"] not in GRAVITY:
            continue
        up, down, d_up, d_down = survey.flow(ln)
        fall = survey.invert(up, d_up) - survey.invert(down, d_down)
        assert fall > 0 and fall / survey.length(ln) >= 0.003 - 1e-9, ln
        flows[ln["流向"]] += 1
    assert flows["1"] > 100 and flows["-1"] >= 2  # some lines are written reversed


def _size(ln: dict) -> float:
    if ln["管径"]:
        return float(ln["管径"])
    w, h = (float(v) for v in ln["断面"].split("X"))
    return 2 * math.sqrt(w * h / math.pi)  # equivalent diameter of a box culvert


def test_gravity_networks_are_trees_growing_downstream(survey: Survey) -> None:
    for minor in GRAVITY:
        out: dict[str, dict] = {}
        for ln in survey.lines:
            if ln["管线小类"] == minor:
                up, down, _, _ = survey.flow(ln)
                assert up not in out, f"{up} has two outgoing pipes"
                out[up] = ln
        outfalls = 0
        for ln in out.values():
            down = survey.flow(ln)[1]
            if down in out:
                assert _size(out[down]) >= _size(ln), (ln, out[down])
            else:
                assert survey.by_no[down]["附属物"] == "出水口"
                outfalls += 1
        assert outfalls >= 1
        assert any(
            survey.by_no[n]["附属物"] == "出水口"
            for n in survey.by_no
            if survey.by_no[n]["管线小类"] == minor
        )
    assert any(ln["断面"] == "2000X1500" for ln in survey.lines if ln["管线小类"] == "YS")


def test_water_valves_and_hydrants(survey: Survey) -> None:
    adj: dict[str, list[str]] = defaultdict(list)
    for ln in survey.lines:
        if ln["管线类别"] == "JS":
            adj[ln["起点点号"]].append(ln["终点点号"])
            adj[ln["终点点号"]].append(ln["起点点号"])
    junctions = 0
    for no, nbrs in adj.items():
        p = survey.by_no[no]
        if p["特征"] not in ("三通", "四通"):
            continue
        if any(survey.by_no[n]["附属物"] == "消防栓" for n in nbrs):
            continue  # a hydrant tee on a straight main
        junctions += 1
        for n in nbrs:
            assert survey.by_no[n]["附属物"] == "阀门", (no, n)
            d = math.dist(survey.xy(no), survey.xy(n))
            assert 6.0 - 1e-6 <= d <= 10.0 + 1e-6, (no, n, d)
    assert junctions > 20
    hydrants = [n for n, p in survey.by_no.items() if p["附属物"] == "消防栓"]
    assert len(hydrants) > 100
    for h in hydrants:
        assert len(adj[h]) == 1
        assert 3.0 - 1e-6 <= math.dist(survey.xy(h), survey.xy(adj[h][0])) <= 5.0 + 1e-6
        assert survey.by_no[adj[h][0]]["特征"] == "三通"


def test_gbk_csv_and_xlsx_hold_the_same_rows(sample: Path) -> None:
    pdir = sample / "pipelines"
    assert not (pdir / "points.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\r\n" not in (pdir / "lines.csv").read_bytes()
    wb = openpyxl.load_workbook(pdir / "pipelines.xlsx", read_only=True)
    assert wb.sheetnames == ["管线点", "管线段"]
    for name, sheet in (("points", "管线点"), ("lines", "管线段")):
        utf8 = read_csv(pdir / f"{name}.csv")
        assert read_csv(pdir / f"{name}_gbk.csv", "gbk") == utf8
        rows = list(wb[sheet].iter_rows(values_only=True))
        header, body = list(rows[0]), rows[1:]
        assert header == list(utf8[0].keys())
        assert len(body) == len(utf8)
        for r, c in zip(body, utf8, strict=True):
            for v, key in zip(r, header, strict=True):
                text = c[key]
                if v is None:
                    assert text == ""
                elif isinstance(v, int | float):
                    assert float(text) == float(v)
                else:
                    assert text == v


# ---------------------------------------------------------------- admin, parcels, buildings


def test_grid_hierarchy_nests_and_tiles(sample: Path) -> None:
    admin = sample / "gpkg/admin.gpkg"
    street, comm, grid = (read(admin, n) for n in ("street", "community", "work_grid"))
    assert len(street) == 1 and street["code"].iloc[0].startswith("440309")
    assert 5 <= len(comm) <= 7 and 50 <= len(grid) <= 70
    assert all(len(c) == 9 for c in street["code"])
    assert all(len(c) == 12 for c in comm["code"]) and all(len(c) == 14 for c in grid["code"])
    cgeom = dict(zip(comm["code"], comm.geometry, strict=True))
    sgeom = dict(zip(street["code"], street.geometry, strict=True))
    for code, cc, g, area in zip(
        grid["code"], grid["comm_cd"], grid.geometry, grid["area_m2"], strict=True
    ):
        assert code.startswith(cc)
        assert cgeom[cc].covers(g)
        assert abs(g.area - area) < 0.01
    for code, sc, g in zip(comm["code"], comm["street_cd"], comm.geometry, strict=True):
        assert code.startswith(sc) and sgeom[sc].covers(g)
    total = street.geometry.iloc[0].area
    assert math.isclose(grid.geometry.area.sum(), total, rel_tol=1e-9)
    assert math.isclose(comm.geometry.area.sum(), total, rel_tol=1e-9)
    assert math.isclose(shapely.union_all(grid.geometry.values).area, total, rel_tol=1e-9)
    districts = read(admin, "district")
    ns = districts[districts["slug"] == "north-station"]
    assert ns["kind"].iloc[0] == "business_district"
    x, y = transformer(4490, 4547).transform(STATION_LON, STATION_LAT)
    assert ns.geometry.iloc[0].contains(shapely.Point(x, y))


def test_buildings_inside_parcels_without_overlap(sample: Path) -> None:
    b = read(sample / "gpkg/buildings.gpkg", "building")
    p = read(sample / "gpkg/parcels.gpkg", "parcel")
    assert 180 <= len(b) <= 320 and b["bldg_cd"].is_unique
    parcels = {c: (g, h) for c, g, h in zip(p["parcel_cd"], p.geometry, p["h_limit"], strict=True)}
    for _, row in b.iterrows():
        geom, h_limit = parcels[row["parcel_cd"]]
        assert geom.covers(row.geometry), row["bldg_cd"]
        assert row["height_m"] <= h_limit + 1e-6
        if row["name"] == "深圳北站":
            continue
        assert 3.0 - 1e-6 <= row["height_m"] / row["floors"] <= 4.5 + 1e-6
        assert math.isclose(row["floor_area"], row.geometry.area * row["floors"], abs_tol=0.1)
        if row["use"] == "residential":
            assert 18 <= row["floors"] <= 45 and row["residents"] > 0
        else:
            assert np.isnan(row["residents"]) or row["residents"] is None
        if row["use"] == "education":
            assert row["floors"] <= 6
    tree = shapely.STRtree(b.geometry.values)
    left, right = tree.query(b.geometry.values, predicate="intersects")
    pairs = [(i, j) for i, j in zip(left, right, strict=True) if i < j]
    for i, j in pairs:
        assert b.geometry.iloc[i].intersection(b.geometry.iloc[j]).area < 1e-6
    parcel_tree = shapely.STRtree(p.geometry.values)
    left, right = parcel_tree.query(p.geometry.values, predicate="intersects")
    for i, j in zip(left, right, strict=True):
        if i < j:
            assert p.geometry.iloc[i].intersection(p.geometry.iloc[j]).area < 1e-6


def test_station_hall_and_metro(sample: Path) -> None:
    b = read(sample / "gpkg/buildings.gpkg", "building")
    hall = b[b["name"] == "深圳北站"].iloc[0]
    x, y = transformer(4490, 4547).transform(STATION_LON, STATION_LAT)
    x0, y0, x1, y1 = hall.geometry.bounds
    assert math.isclose(x1 - x0, HALL_WE, abs_tol=0.01)
    assert math.isclose(y1 - y0, HALL_NS, abs_tol=0.01)
    assert math.dist(((x0 + x1) / 2, (y0 + y1) / 2), (x, y)) < 0.01
    assert hall["height_m"] == 43.6 and hall["use"] == "transport"
    assert hall["floor_area"] == 180000
    ug = read(sample / "gpkg/buildings.gpkg", "underground_structure")
    assert {"metro_tunnel", "metro_station"} <= set(ug["kind"])
    assert (ug["top_elev"] > ug["bot_elev"]).all()
    box = ug[ug["kind"] == "metro_station"].iloc[0]
    assert box.geometry.intersects(hall.geometry)
    assert math.isclose(box["top_elev"] - box["bot_elev"], 15.0, abs_tol=0.01)
    for _, t in ug[ug["kind"] == "metro_tunnel"].iterrows():
        ground = hall["base_elev"]
        assert t["top_elev"] < ground - 5 and t["bot_elev"] < t["top_elev"] - 10


def test_no_pipes_under_the_hall(sample: Path, survey: Survey) -> None:
    b = read(sample / "gpkg/buildings.gpkg", "building")
    hall = b[b["name"] == "深圳北站"].geometry.iloc[0]
    lines = shapely.linestrings(
        [[survey.xy(ln["起点点号"]), survey.xy(ln["终点点号"])] for ln in survey.lines]
    )
    assert not shapely.intersects(lines, hall).any()


# ---------------------------------------------------------------- components, incidents


def test_manhole_covers_sit_on_their_manholes(sample: Path, survey: Survey) -> None:
    comps = read(sample / "gpkg/components.gpkg", "component")
    pts = comps[comps.geom_type == "Point"]
    cx, cy = shapely.get_x(pts.geometry.values), shapely.get_y(pts.geometry.values)
    for cls, (appurt, minors) in COVER_OF.items():
        mask = (pts["class_cd"] == cls).to_numpy()
        covers = sorted(
            zip(np.round(cx[mask], 3).tolist(), np.round(cy[mask], 3).tolist(), strict=True)
        )
        wells = sorted(
            (float(p["Y"]), float(p["X"]))
            for p in survey.points
            if p["附属物"] == appurt and p["管线小类"] in minors
        )
        assert covers == wells, cls


def test_incidents_geojson(sample: Path, survey: Survey) -> None:
    doc = json.loads((sample / "incidents.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    feats = doc["features"]
    assert 30 <= len(feats) <= 50
    to_grid = transformer("OGC:CRS84", 4547)
    water = shapely.MultiLineString(
        [
            [survey.xy(ln["起点点号"]), survey.xy(ln["终点点号"])]
            for ln in survey.lines
            if ln["管线类别"] == "JS"
        ]
    )
    bursts_on_main = 0
    ids = set()
    for f in feats:
        lon, lat = f["geometry"]["coordinates"]
        assert 113.9 < lon < 114.2 and 22.5 < lat < 22.7
        assert all(len(repr(v).split(".")[1]) <= 7 for v in (lon, lat))
        pr = f["properties"]
        assert 1 <= pr["severity"] <= 4 and pr["status"] in INCIDENT_STATUSES
        assert datetime.fromisoformat(pr["reported_at"]).utcoffset().total_seconds() == 8 * 3600
        assert pr["title"] and pr["external_id"] == f["id"]
        ids.add(f["id"])
        if pr["incident_type"] == "pipe_burst":
            x, y = to_grid.transform(lon, lat)
            bursts_on_main += water.distance(shapely.Point(x, y)) < 0.05
    assert len(ids) == len(feats) and bursts_on_main >= 1


# ---------------------------------------------------------------- dirty sample


def test_dirty_sample_defects_are_listed_and_present(dirty: Path) -> None:
    defects = json.loads((dirty / "defects.json").read_text(encoding="utf-8"))["defects"]
    by_rule = {d["rule"]: d for d in defects}
    assert set(by_rule) == {
        "duplicate_point_no",
        "line_end_missing",
        "gravity_uphill",
        "unknown_component_class",
        "invalid_geometry",
        "missing_crs",
        "line_start_equals_end",
        "depth_out_of_range",
        "unknown_material",
    }
    readme = (dirty / "README.md").read_text(encoding="utf-8")
    assert all(d["id"] in readme and d["rule"] in readme for d in defects)
    s = Survey(dirty)

    dup = by_rule["duplicate_point_no"]
    nos = [s.points[r - 1]["物探点号"] for r in dup["rows"]]
    assert nos == [dup["key"]] * 2
    counts = Counter(p["物探点号"] for p in s.points)
    assert [n for n, c in counts.items() if c > 1] == [dup["key"]]

    def rows_where(pred) -> list[int]:
        return [k + 1 for k, ln in enumerate(s.lines) if pred(ln)]

    assert (
        rows_where(lambda ln: ln["终点点号"] not in s.by_no or ln["起点点号"] not in s.by_no)
        == by_rule["line_end_missing"]["rows"]
    )
    assert (
        rows_where(lambda ln: ln["起点点号"] == ln["终点点号"])
        == by_rule["line_start_equals_end"]["rows"]
    )

    def uphill(ln: dict) -> bool:
        if ln["管线小类"] not in GRAVITY or ln["终点点号"] not in s.by_no:
            return False
        up, down, du, dd = s.flow(ln)
        return s.invert(up, du) < s.invert(down, dd)

    assert rows_where(uphill) == by_rule["gravity_uphill"]["rows"]

    def out_of_range(ln: dict) -> bool:
        lo, hi = DEPTHS[ln["管线小类"]]
        return not all(lo <= float(ln[c]) <= hi for c in ("起点埋深", "终点埋深"))

    assert rows_where(out_of_range) == by_rule["depth_out_of_range"]["rows"]
    materials = set(attribute_codes("material").values())
    assert rows_where(lambda ln: ln["材质"] not in materials) == by_rule["unknown_material"]["rows"]
    # the GBK copy and the workbook carry the same defects
    assert read_csv(dirty / "pipelines/lines_gbk.csv", "gbk") == s.lines

    comps = read(dirty / "gpkg/components.gpkg", "component")
    bad = comps[~comps["class_cd"].isin(list(component_classes()))]
    assert list(bad["comp_id"]) == [by_rule["unknown_component_class"]["feature"]]
    shp = read(dirty / "shp/component.shp")
    assert (shp["class_cd"] == "9999").sum() == 1

    parcels = read(dirty / "gpkg/parcels.gpkg", "parcel")
    invalid = parcels[~shapely.is_valid(parcels.geometry.values)]
    assert list(invalid["parcel_cd"]) == [by_rule["invalid_geometry"]["feature"]]
    assert not shapely.is_valid(read(dirty / "shp/parcel.shp").geometry.values).all()

    nocrs = dirty / by_rule["missing_crs"]["file"]
    assert nocrs.is_file() and not nocrs.with_suffix(".prj").exists()
    assert read(nocrs).crs is None


# ---------------------------------------------------------------- CLI and errors


def test_unwritable_out_dir_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        generate(blocker / "out", "sample")


def test_foreign_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate(tmp_path, "sample")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_scale_and_dirty_district_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown scale"):
        generate(tmp_path / "x", "city")
    with pytest.raises(UserError, match="--dirty"):
        generate(tmp_path / "y", "district", dirty=True)


def test_cli_generate_prints_summary(tmp_path: Path, dirty: Path) -> None:
    result = CliRunner().invoke(app, ["generate", str(tmp_path / "cli"), "--dirty"])
    assert result.exit_code == 0, result.output
    assert "defects.json" in result.output and "total" in result.output
    assert differing(tmp_path / "cli", dirty) == []
    # running again into the same folder replaces the earlier sample
    result = CliRunner().invoke(app, ["generate", str(tmp_path / "cli"), "--dirty"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- district scale


@pytest.mark.slow
def test_district_scale(tmp_path: Path) -> None:
    counts = generate(tmp_path / "district", "district", DEFAULT_SEED)
    assert counts["streets"] == 10 and counts["communities"] == 92
    assert 1600 <= counts["work_grids"] <= 1700
    assert 19_000 <= counts["buildings"] <= 23_000
    assert 450_000 <= counts["components"] <= 550_000
    manifest = json.loads((tmp_path / "district/manifest.json").read_text(encoding="utf-8"))
    assert 9_000 <= sum(manifest["pipeline_km"].values()) <= 11_000
