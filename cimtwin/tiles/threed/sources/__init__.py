"""One module per 3D source: each reads PostGIS for a tile's region and returns
:class:`cimtwin.tiles.threed.mesh.TileContent` in storage coordinates."""
