"""Data model, CRS handling and the spatial SQL shared by importers, tiles and the API."""
