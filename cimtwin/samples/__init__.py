"""Synthetic but realistic sample districts, written in the formats surveyors deliver."""
