"""cimtwin: open CIM / digital-twin spatial data service on PostGIS."""

__version__ = "0.1.0"
