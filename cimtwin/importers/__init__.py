"""Importers: surveyors' files -> validated, all-or-nothing loads into PostGIS."""
