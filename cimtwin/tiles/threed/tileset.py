"""tileset.json from a plan and its jobs' summaries: an explicit tree, REPLACE refinement,
measured geometric errors, regions from the actual content, one ENU frame per tile.

* **Explicit, not implicit, tiling.** District data are sparse (a station, a few streets of
  buildings, pipes along roads): an implicit quadtree would need availability bitstreams and
  subtree files for mostly empty space; the explicit tree lists only the non-empty tiles
  and stays a few hundred entries at district scale.
* **REPLACE.** A parent holds the same features as its children, simplified or merged (a
  source's ``content`` at a tolerance), not a subset of them; ADD would draw both copies.
* **Geometric error** of a tile is its content's measured ``error_m`` (0 at full detail), at
  least every child's (the spec wants parents >= children); a tile without content draws
  nothing, so its error is its box's diagonal, and the tileset's is at least that too.
* **Transforms.** Every tile with content has its own ENU frame at its centre (vertices
  float32 relative to it). 3D Tiles multiply a child's ``transform`` with its parent's, so a
  tile's written ``transform`` is ``inverse(parent world) @ its world`` (float64), and its
  world matrix is exactly its ENU frame. ``region`` bounding volumes are not transformed,
  so they are written in plain radians and heights: each tile's is the union of its
  content's region and its children's.
"""

from __future__ import annotations

import math

import numpy as np

from cimtwin.tiles.threed.plan import Key, Plan, TileSummary


def _matrix(column_major: list[float]) -> np.ndarray:
    return np.array(column_major, dtype=np.float64).reshape(4, 4).T


def _union(a: list[float] | None, b: list[float] | None) -> list[float] | None:
    if a is None:
        return b
    if b is None:
        return a
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])] + [
        min(a[4], b[4]),
        max(a[5], b[5]),
    ]


def _diagonal(box: tuple[float, float, float, float]) -> float:
    return math.hypot(box[2] - box[0], box[3] - box[1])


def assemble(
    plan: Plan,
    summaries: dict[Key, TileSummary],
    schema: dict,
    *,
    description: str,
    extras: dict | None = None,
) -> dict:
    """The tileset.json document (a dict) of a built plan."""

    def node(key: Key, parent_world: np.ndarray) -> tuple[dict, float, list[float]] | None:
        planned, summary = plan.tiles[key], summaries.get(key)
        has_content = summary is not None and summary.path is not None
        world = parent_world
        tile: dict = {}
        if has_content:
            assert summary is not None and summary.transform is not None
            world = _matrix(summary.transform)
            relative = np.linalg.solve(parent_world, world)
            tile["transform"] = [float(v) for v in relative.T.reshape(-1)]
        children = [c for c in (node(k, world) for k in planned.children) if c is not None]
        region = summary.region if has_content and summary else None
        for _, _, child_region in children:
            region = _union(region, child_region)
        if region is None:
            return None
        child_error = max((e for _, e, _ in children), default=0.0)
        if has_content and summary:
            error = max(summary.error_m, child_error)
        else:
            error = max(_diagonal(planned.box), child_error)
        tile["boundingVolume"] = {"region": region}
        tile["geometricError"] = error
        if has_content and summary:
            tile["content"] = {"uri": summary.path}
        if children:
            tile["refine"] = "REPLACE"
            tile["children"] = [c for c, _, _ in children]
        return tile, error, region

    built = [n for n in (node(k, np.eye(4)) for k in plan.roots) if n is not None]
    if len(built) == 1:
        root, root_error, root_region = built[0]
    else:
        region = None
        for _, _, r in built:
            region = _union(region, r)
        boxes = [plan.tiles[k].box for k in plan.roots]
        span = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        root_error = max([_diagonal(span)] + [e for _, e, _ in built])
        root_region = region or [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        root = {
            "boundingVolume": {"region": root_region},
            "geometricError": root_error,
            "refine": "REPLACE",
            "children": [c for c, _, _ in built],
        }
    root.setdefault("refine", "REPLACE")
    span_box = plan.tiles[plan.roots[0]].box if len(plan.roots) == 1 else None
    tileset_error = max(root_error, _diagonal(span_box) if span_box else root_error)
    return {
        "asset": {
            "version": "1.1",
            "generator": "cimtwin build-3d",
            "extras": {"placement": description, **(extras or {})},
        },
        "schema": schema,
        "geometricError": tileset_error,
        "root": root,
    }
