"""OGC API - Features: Part 1 (Core, GeoJSON, HTML, OpenAPI 3.0), Part 2 (CRS by reference),
Part 3 (filtering with CQL2-text) and Part 5 (schemas) over the layer catalogue.

The catalogue (:mod:`cimtwin.spatial.catalogue`) is the allow-list: collections, tables,
columns and properties come only from it and reach SQL as ``psycopg.sql.Identifier``; every
user value travels as a query parameter. Bad input is answered with 400 and an OGC exception
body ``{"code": ..., "description": ...}`` naming the parameter; unknown collections and
features with 404.

One module per job, as tipg splits its factory: :mod:`.errors` (the 404s), :mod:`.deps`
(links, responses, the collection dependency), :mod:`.params` (query parameters),
:mod:`.queries` (SQL), :mod:`.schemas` (queryables and JSON Schemas), :mod:`.openapi`
(the OpenAPI 3.0 document), and two routers that import none of each other:
:mod:`.collections` (landing page, conformance, collections) and :mod:`.items` (features).
"""

from __future__ import annotations

from fastapi import APIRouter

from cimtwin.api.features import collections, items

router = APIRouter()
router.include_router(collections.router)
router.include_router(items.router)

__all__ = ["router"]
