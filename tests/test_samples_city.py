"""A simulated city (`cimtwin samples generate --scale city`): districts under their own county
codes, side by side without overlapping, byte-identical for the same (seed, N), and loadable
together into one twin by `cimtwin samples load`.

Two districts of the small ``sample`` size keep it to seconds of CPU."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pyogrio
import pytest
import shapely
from typer.testing import CliRunner

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.samples.city import GAP, generate_city
from cimtwin.samples.cli import app
from cimtwin.samples.loader import load_sample
from cimtwin.samples.spec import SHENZHEN

SEED = 77
#: every layer with objects on the ground, and the column holding its code
LAYERS: dict[tuple[str, str], str] = {
    ("gpkg/admin.gpkg", "street"): "code",
    ("gpkg/admin.gpkg", "community"): "code",
    ("gpkg/admin.gpkg", "work_grid"): "code",
    ("gpkg/admin.gpkg", "district"): "slug",
    ("gpkg/parcels.gpkg", "parcel"): "parcel_cd",
    ("gpkg/buildings.gpkg", "building"): "bldg_cd",
    ("gpkg/buildings.gpkg", "underground_structure"): "code",
    ("gpkg/components.gpkg", "component"): "comp_id",
}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city") / "two"
    generate_city(out, 2, "sample", SEED)
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def districts(city: Path) -> list[Path]:
    return [city / d["folder"] for d in manifest(city)["districts"]]


def codes(folder: Path) -> dict[str, set[str]]:
    """Every identifier a district writes: layer codes, incident ids, pipeline files aside."""
    out: dict[str, set[str]] = {}
    for (path, layer), col in LAYERS.items():
        df = pyogrio.read_dataframe(folder / path, layer=layer, read_geometry=False)
        out[layer] = set(df[col].astype(str))
    gj = json.loads((folder / "incidents.geojson").read_text(encoding="utf-8"))
    out["incident"] = {f["properties"]["external_id"] for f in gj["features"]}
    return out


def test_each_district_has_its_own_county_codes(city: Path) -> None:
    doc = manifest(city)
    assert [d["county"] for d in doc["districts"]] == [SHENZHEN[0].code, SHENZHEN[1].code]
    per = [codes(d) for d in districts(city)]
    for county, found, folder in zip(SHENZHEN, per, districts(city), strict=False):
        assert manifest(folder)["county"]["code"] == county.code
        for layer in ("street", "community", "work_grid", "component"):
            assert found[layer] and all(c.startswith(county.code) for c in found[layer]), layer
        assert all(c.startswith(f"JZ{county.code}") for c in found["building"])
        assert all(c.startswith(f"{county.abbr}-") for c in found["incident"])
        assert all(c.startswith(f"{county.code}-") for c in found["district"])
        assert all(c.startswith(f"{county.code}-") for c in found["underground_structure"])
        assert all(c.startswith(f"DK{county.code}") for c in found["parcel"])
    for kind in per[0]:
        assert per[0][kind].isdisjoint(per[1][kind]), kind
    # the same named areas (core, hub, plan) in each, moved with its district
    named = [{s.split("-", 1)[1] for s in found["district"]} for found in per]
    assert named[0] == named[1] and "north-station" in named[0]


def test_districts_lie_side_by_side_without_overlapping(city: Path) -> None:
    boxes = []
    for folder in districts(city):
        grids = pyogrio.read_dataframe(folder / "gpkg/admin.gpkg", layer="work_grid")
        area = shapely.union_all(grids.geometry.values)
        for path, layer in LAYERS:  # every object inside its own district
            df = pyogrio.read_dataframe(folder / path, layer=layer)
            assert bool(shapely.covers(area.buffer(0.01), df.geometry.values).all()), layer
        boxes.append(area)
    a, b = boxes
    assert a.distance(b) >= GAP - 1e-6
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    assert bx0 > ax1 and abs(by0 - ay0) < 100  # the second east of the first, same row
    listed = [d["extent"] for d in manifest(city)["districts"]]
    assert listed == [[round(v, 3) for v in g.bounds] for g in boxes]


def test_same_seed_and_count_give_identical_bytes(city: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_city(again, 2, "sample", SEED)

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}

    first, second = files(city), files(again)
    assert sorted(first) == sorted(second) and len(first) > 50
    assert [k for k in first if first[k] != second[k]] == []
    # a city of one district in the same folder: the second district's folder is gone
    generate_city(again, 1, "sample", SEED)
    assert sorted(p.name for p in again.iterdir()) == ["440303_luohu", "manifest.json"]
    assert files(again / "440303_luohu") == files(city / "440303_luohu")


def test_load_imports_every_district(city: Path, scratch_database: str) -> None:
    results = load_sample(city, scratch_database)
    assert {r.status for r in results} == {"succeeded"}
    datasets = {r.dataset for r in results}
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        rows = conn.execute(
            "SELECT dataset, kind, status FROM cim.import_batch ORDER BY id"
        ).fetchall()
        by_county = dict(
            conn.execute(
                "SELECT left(component_id, 6), count(*) FROM cim.city_component GROUP BY 1"
            ).fetchall()
        )
        grids = dict(
            conn.execute("SELECT left(code, 6), count(*) FROM cim.work_grid GROUP BY 1").fetchall()
        )
        outside = conn.execute(
            "SELECT count(*) FROM cim.city_component WHERE grid_code IS NULL"
            " OR left(grid_code, 6) <> left(component_id, 6)"
        ).fetchone()
        # the district key: each district's rows in its own county (datasets are named
        # after their district's folder, "<county>_<name>")
        keyed = {
            t: conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE position(x.county_code IN b.dataset)"
                f" = 0), count(DISTINCT x.county_code) FROM cim.{t} x "
                "JOIN cim.import_batch b ON b.id = x.batch_id"
            ).fetchone()
            for t in ("building", "city_component", "pipeline_node", "pipeline_segment", "parcel")
        }
    assert {r[2] for r in rows} == {"succeeded"}
    names = {r[0] for r in rows}
    assert {n.split(":")[1] for n in names} == {"440303_luohu", "440304_futian"}
    assert datasets == names
    for d in manifest(city)["districts"]:
        assert by_county[d["county"]] == d["counts"]["components"]
        assert grids[d["county"]] == d["counts"]["work_grids"]
    assert outside == (0,)  # every component got a grid of its own district
    for t, (rows_in, elsewhere, counties) in keyed.items():
        assert rows_in > 0 and elsewhere == 0 and counties == 2, (t, rows_in, elsewhere, counties)


def test_cli_options_and_mistakes(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["generate", "--help"], terminal_width=200).output
    for option in ("--districts", "--district-scale", "city"):
        assert option in help_text
    r = runner.invoke(app, ["generate", str(tmp_path / "a"), "--districts", "2"])
    assert isinstance(r.exception, UserError) and "--scale city" in str(r.exception)
    r = runner.invoke(app, ["generate", str(tmp_path / "b"), "--scale", "city", "--dirty"])
    assert isinstance(r.exception, UserError) and "--dirty" in str(r.exception)
    r = runner.invoke(
        app, ["generate", str(tmp_path / "c"), "--scale", "city", "--districts", "11"]
    )
    assert r.exit_code == 2 and "less than or equal to 10" in r.output
    with pytest.raises(UserError, match="1..10"):
        generate_city(tmp_path / "d", 0, "sample")
    assert not (tmp_path / "d").exists()


def test_load_refuses_a_city_manifest_pointing_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps({"scale": "city", "districts": [{"folder": ".."}]}), encoding="utf-8"
    )
    with pytest.raises(UserError, match="no folder"):
        load_sample(tmp_path)
