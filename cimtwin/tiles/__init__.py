"""Tiling engine: vector tiles (MVT) now; 3D Tiles join in round 2."""
