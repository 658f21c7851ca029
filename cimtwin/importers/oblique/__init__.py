"""Oblique photography (ContextCapture / Smart3D productions) into the twin."""
