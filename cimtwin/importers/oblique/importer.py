"""``cimtwin import oblique PRODUCTION_DIR``: a ContextCapture (Smart3D) OSGB production into
a 3D Tiles 1.1 tileset and one ``oblique_mesh_tile`` row per tile.

All or nothing like every import: the tileset is written into a hidden staging folder of
``CIMTWIN_TILES_DIR`` while the files are read (an unreadable OSGB stops the import naming
the file, the staging folder is removed), the rows go in the import's transaction, and the
folder replaces ``CIMTWIN_TILES_DIR/<tileset id>/`` only once that transaction committed
(:meth:`ObliqueImporter.finish`). With ``CIMTWIN_TILES_DIR`` an object store (``s3://...``),
the tileset is staged in a local temporary folder and uploaded after the commit: contents
first, each ``tileset.json`` last, then the old version's leftover objects removed, so a
viewer never finds a tileset.json naming a content not yet there. The tileset id is
``oblique-<--dataset>`` when that is a plain name, else
``oblique-<folder name>-<hash of the dataset key>``; ``/3dtiles`` lists it and the viewer
shows it as any other tileset.

The footprints of the buildings already in the database are baked into the mesh
(:mod:`.footprints`): a click on a building in the photo mesh picks its record; each row
lists the building ids its tile touches. ``cimtwin tiles build-3d --layers oblique``
re-runs this import for every production (:mod:`.rebuild`), e.g. after new buildings.

Tile folders are converted in parallel by ``CIMTWIN_OBLIQUE_WORKERS`` processes (0, the
default: one per core), the same files for any number (:mod:`.pyramid`); the progress bar
advances per finished tile folder.

Without ``metadata.xml`` the production's place is unknown: the import is refused asking for
``--crs`` and ``--origin`` (an ``ENU:lat,lon`` CRS needs no origin).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
import shapely

from cimtwin.importers.base import ImportOptions, Prepared
from cimtwin.importers.oblique.footprints import Footprints
from cimtwin.importers.oblique.georef import (
    GeorefError,
    Metadata,
    ToStorage,
    parse_origin,
    parse_srs,
    read_metadata,
)
from cimtwin.importers.oblique.osgb import OsgbError, osgconv
from cimtwin.importers.oblique.pyramid import PyramidWriter, production_roots
from cimtwin.importers.report import Report
from cimtwin.importers.runner import ImportFailed, default_dataset
from cimtwin.settings import get_settings
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.building import ObliqueMeshTile
from cimtwin.spatial.county import CountyPlacement
from cimtwin.spatial.provenance import batch_dataset
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.store import Store, open_store

#: how far (degrees) a production may reach beyond the storage CRS's area of use
AREA_MARGIN_DEG = 0.5
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,55}")


def tileset_id(dataset: str, production: Path, given: bool) -> str:
    """A folder name matching the /3dtiles id pattern, one per dataset."""
    if given and _PLAIN.fullmatch(dataset):
        return f"oblique-{dataset}"
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", production.name).strip("-_")[:40] or "production"
    return f"oblique-{slug}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"


class ObliqueImporter:
    kind = "oblique"
    models = (ObliqueMeshTile,)

    def __init__(
        self,
        tiles_dir: Path | Store | None = None,
        database_url: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.tiles_dir = tiles_dir
        #: processes converting tile folders in parallel (default: CIMTWIN_OBLIQUE_WORKERS,
        #: whose 0 means one per core)
        self.workers = workers
        #: where the building footprints baked into the mesh are read (单体化); the same
        #: database the import writes to (default: CIMTWIN_DATABASE_URL)
        self.database_url = database_url

    def use_database(self, url: str | None) -> None:
        """The runner's database (read for the footprints before the rows are written)."""
        if url is not None:
            self.database_url = url

    def _footprints(self, bbox: tuple[float, float, float, float]) -> Footprints:
        from cimtwin.db.engine import libpq_dsn

        url = self.database_url or get_settings().database_url
        with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
            return Footprints.read(conn, bbox)

    def options_fingerprint(self, options: ImportOptions) -> str:
        """--crs, --origin and --height-datum change where the mesh lands."""
        return json.dumps([options.crs, options.origin, options.height_datum])

    def _locate(self, production: Path, options: ImportOptions, report: Report) -> Metadata:
        metadata = production / "metadata.xml"
        if options.crs:
            origin = parse_origin(options.origin, "--origin") if options.origin else None
            if origin is None and metadata.is_file():
                origin = read_metadata(metadata).origin
            srs = parse_srs(options.crs, origin if origin is not None else np.zeros(3), "--crs")
            if origin is None and srs.enu is None:
                raise GeorefError(
                    f"{production}: --crs {options.crs} needs --origin X,Y,Z (the "
                    "production's SRSOrigin in that CRS)"
                )
            located = Metadata(srs, origin if origin is not None else np.zeros(3))
        elif metadata.is_file():
            located = read_metadata(metadata)
            if options.origin:
                located = Metadata(located.srs, parse_origin(options.origin, "--origin"))
        else:
            raise GeorefError(
                f"{production}: no metadata.xml, so where the production lies is unknown; pass "
                "--crs (its SRS: EPSG:4547, a WKT, or ENU:lat,lon) and --origin X,Y,Z (its "
                "SRSOrigin in that CRS, e.g. --origin 501027.524,2488718.808,0)"
            )
        for warning in located.srs.warnings:
            report.warning(metadata, None, "oblique-srs-label", warning)
        return located

    def prepare(self, paths: list[Path], options: ImportOptions, report: Report) -> Prepared:
        if len(paths) != 1:
            raise ImportFailed(
                f"oblique: give one production folder per import, not {len(paths)}; "
                "nothing was written"
            )
        production = paths[0]
        if not production.is_dir():
            raise ImportFailed(
                f"{production}: not a folder; give the production's folder (the one with "
                "metadata.xml and Data/); nothing was written"
            )
        try:
            osgconv()
            located = self._locate(production, options, report)
            to_storage = ToStorage(located.srs, located.origin, options.height_datum)
        except (GeorefError, OsgbError) as exc:
            raise ImportFailed(f"{exc}; nothing was written") from exc
        roots = production_roots(production)
        if not roots:
            raise ImportFailed(
                f"{production}: no OSGB or OBJ tiles (Data/Tile_*/Tile_*.osgb or .obj, or "
                "*.osgb in the folder); nothing was written"
            )
        dataset = options.dataset or default_dataset(self.kind, paths)
        tid = tileset_id(dataset, production, options.dataset is not None)
        store = (
            self.tiles_dir
            if isinstance(self.tiles_dir, Store)
            else open_store(self.tiles_dir or get_settings().tiles_dir)
        )
        if store.local:
            root = Path(store.root)
            staging = root / f".{tid}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        else:  # built here, uploaded once the rows are in
            store.check_writable()
            staging = Path(tempfile.mkdtemp(prefix=f"cimtwin-{tid}-"))
        workers = self.workers or get_settings().oblique_workers or os.cpu_count() or 1
        advance = (
            options.progress(f"oblique: {len(roots)} tile folder(s)", len(roots))
            if options.progress
            else None
        )
        try:
            writer = PyramidWriter(
                production,
                to_storage,
                staging,
                report,
                advance,
                footprints=self._footprints,
                workers=workers,
            )
            built = writer.build(
                roots,
                {
                    "title": f"Oblique photography {options.dataset or production.name}",
                    "srs": located.srs.label if located.srs.enu else located.srs.label[:200],
                    "srs_origin": [float(v) for v in located.origin],
                    "height_datum": to_storage.height_datum,
                },
            )
            self._check_area(production, built.records)
        except (OsgbError, GeorefError, ValueError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ImportFailed(f"{exc}; nothing was written") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        boxes = [r.bounds for r in built.records if r.uri]
        bbox = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        return Prepared(
            format=roots[0].suffix.lower().lstrip("."),
            source_crs=located.srs.label,
            feature_count=len(built.records),
            extra={
                "records": built.records,
                "staging": staging,
                "store": store,
                "tileset_id": tid,
                "vertical_datum": f"{to_storage.height_datum} -> EPSG:5737",
                "files_read": built.files_read,
                "osgconv_s": built.osgconv_s,
            },
            bbox=bbox,
        )

    def _check_area(self, production: Path, records: list) -> None:
        aou = crs_mod.storage_crs().area_of_use
        if aou is None:
            return
        for r in records:
            if not r.uri:
                continue
            lon0, lat0 = crs_mod.storage_to_lonlat(r.bounds[0], r.bounds[1])
            lon1, lat1 = crs_mod.storage_to_lonlat(r.bounds[2], r.bounds[3])
            if not (
                min(lon0, lon1) >= aou.west - AREA_MARGIN_DEG
                and max(lon0, lon1) <= aou.east + AREA_MARGIN_DEG
                and min(lat0, lat1) >= aou.south - AREA_MARGIN_DEG
                and max(lat0, lat1) <= aou.north + AREA_MARGIN_DEG
            ):
                raise GeorefError(
                    f"{production}: tile {r.source} lands at {lon0:.3f} E, {lat0:.3f} N, "
                    f"outside the storage CRS ({aou.name}); wrong SRS or origin?"
                )

    def write(self, conn: psycopg.Connection, prepared: Prepared, batch_id: int) -> dict[str, int]:
        from cimtwin.spatial.base import SRID

        dataset = batch_dataset(conn, batch_id)
        tid = prepared.extra["tileset_id"]
        county = dataset_county(conn, prepared.extra["records"], dataset)
        ids: dict[int, int] = {}
        for r in prepared.extra["records"]:
            box = shapely.box(*r.bounds)
            row = conn.execute(
                f"INSERT INTO {T.oblique_mesh_tile} (dataset, tile_path, parent_id, level, "
                "geometric_error, format, vertex_count, texture_count, min_z, max_z, footprint, "
                "tileset, content_uri, triangle_count, texture_bytes, building_ids, batch_id, "
                "county_code) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, ST_GeomFromWKB(%s, %s), %s, %s, "
                "%s, %s, %s, %s, %s) RETURNING id",
                (
                    dataset,
                    r.source,
                    ids.get(r.parent) if r.parent is not None else None,
                    r.level,
                    r.geometric_error,
                    prepared.format,
                    r.vertex_count,
                    r.texture_count,
                    r.min_z,
                    r.max_z,
                    box.wkb,
                    SRID,
                    tid,
                    r.uri,
                    r.triangle_count,
                    r.texture_bytes,
                    r.building_ids,
                    batch_id,
                    county,
                ),
            ).fetchone()
            assert row is not None
            ids[r.number] = row[0]
        return {"oblique_mesh_tile": len(ids), "osgb_files": prepared.extra["files_read"]}

    def finish(self, prepared: Prepared, committed: bool) -> None:
        """Publish the staged tileset once the rows committed; else remove it."""
        staging: Path = prepared.extra["staging"]
        if not committed:
            shutil.rmtree(staging, ignore_errors=True)
            return
        store: Store = prepared.extra["store"]
        tid: str = prepared.extra["tileset_id"]
        if not store.local:
            try:
                publish(staging, store.child(tid))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return
        target = Path(store.root) / tid
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def publish(folder: Path, store: Store) -> None:
    """Upload a built tileset over the one in ``store``: contents, then the tileset.json files
    (deepest first, the root's last), then the objects only the old version had. The rows
    have committed: a failure names what to run again."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    order = sorted(files, key=lambda p: (p.name == "tileset.json", -len(p.parts), str(p)))
    try:
        for f in order:
            store.write_bytes(f.relative_to(folder).as_posix(), f.read_bytes())
        fresh = {f.relative_to(folder).as_posix() for f in files}
        for stale in sorted(store.files() - fresh):
            store.remove(stale)
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFailed(
            f"{store.url}: the rows were imported but the tileset upload failed ({detail}); "
            "run `cimtwin tiles build-3d --layers oblique` to write it again"
        ) from None


def dataset_county(conn: psycopg.Connection, records: list, dataset: str) -> str:
    """The district key of a whole pyramid (parent and child tiles stay on one node): the
    county most of its tiles' footprints lie in, else the twin's one county."""
    placement = CountyPlacement.load(conn)
    found = [c for c in placement.at([shapely.box(*r.bounds) for r in records]) if c]
    if found:
        counts = Counter(found)
        return min(counts, key=lambda c: (-counts[c], c))
    where = f"oblique dataset {dataset}: oblique_mesh_tile"
    return str(placement.complete(np.array([None], dtype=object), where, ["every tile"])[0])
