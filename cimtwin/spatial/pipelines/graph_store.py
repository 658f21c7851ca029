"""Network graphs shared by every API worker on a host: built once, then memory-mapped.

Each worker used to build its own graph from the database (the district's water network:
1.5-2.5 s and 77-95 MB per worker, and again in every worker after each change). The first
worker that needs a graph now builds it and writes its arrays as ``.npy`` files into a
folder named by the database and the tables' fingerprint (:data:`.graph.FINGERPRINT_SQL`);
the other workers map those files read-only, so the pages are held once by the operating
system whatever the number of workers. A file lock makes the workers that miss together
wait for one build.

A folder is used only while its fingerprint is the current one and it is younger than the
graph's maximum age (the same rule as the in-process cache). Each new build removes the older
builds of its network and every folder past the maximum age (a worker still mapping one keeps
its pages until it lets go). The default place is ``/dev/shm`` (memory, never written to
disk), else the temporary folder; ``CIMTWIN_PIPELINE_GRAPH_DIR`` names another, ``off`` keeps
every graph private.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import IO, Any, overload

import numpy as np

from cimtwin.spatial.pipelines.graph import NetworkGraph, Valve, _ValveSegments

#: bump when the stored layout changes, so that an upgraded service never reads old folders
FORMAT = 1
ARRAYS = ("seg_id", "seg_from", "seg_to", "seg_len", "seg_flow", "seg_size", "node_id", "node_xy")
TEXTS = ("node_feature", "node_appurtenance", "node_point_no")
VALVE_COLUMNS = ("seg", "node", "ref", "valve_no", "state")
SEGMENTS = (
    "labels",
    "order",
    "sorted_labels",
    "touch_label",
    "touch_valve",
    "valve_seg_label",
    "valve_node_label",
)


def default_dir() -> Path | None:
    """Where graphs are shared: the setting, else ``/dev/shm``, else the temporary folder;
    None when sharing is off."""
    from cimtwin.settings import get_settings

    chosen = get_settings().pipeline_graph_dir.strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"cimtwin-graphs-{os.getuid()}"


def folder_name(key: Hashable, fingerprint: tuple) -> tuple[str, str]:
    """(prefix shared by every build of this network in this database, full folder name)."""
    where = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    state = hashlib.sha256(repr((FORMAT, fingerprint)).encode()).hexdigest()[:16]
    return f"g{where}-", f"g{where}-{state}"


class GraphStore:
    """Graph folders under ``root``; every method is blocking (run it in a thread)."""

    def __init__(self, root: Path, max_age_s: float) -> None:
        self.root = root
        self.max_age_s = max_age_s

    def _ready(self) -> None:
        """Create the folder (owner only); refuse one another user could write into, since
        every worker trusts what it maps from it."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{self.root} is not a folder only this user can write to")

    def load(self, key: Hashable, fingerprint: tuple) -> NetworkGraph | None:
        """The stored graph, memory-mapped, or None when there is no fresh one."""
        folder = self.root / folder_name(key, fingerprint)[1]
        try:
            self._ready()
            meta = json.loads((folder / "meta.json").read_text())
            if time.time() - meta["built_at"] > self.max_age_s or meta["format"] != FORMAT:
                return None
            return _read(folder, meta)
        except (OSError, ValueError, KeyError):
            return None  # absent, half removed or unreadable: build it again

    def save(self, key: Hashable, fingerprint: tuple, graph: NetworkGraph) -> None:
        """Write the graph's folder atomically (a rename) and drop older builds."""
        prefix, name = folder_name(key, fingerprint)
        self._ready()
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            _write(tmp, graph)
            try:
                os.rename(tmp, self.root / name)
            except OSError:  # another process wrote the same build first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # older builds of this network, and builds of any database too old to be used again
        # (a dropped database's never are): nothing else ever removes them
        too_old = time.time() - self.max_age_s
        for old in self.root.glob("g*"):
            if old.name == name or not old.is_dir():
                continue
            with contextlib.suppress(OSError):
                if old.name.startswith(prefix) or old.stat().st_mtime < too_old:
                    shutil.rmtree(old, ignore_errors=True)

    def lock(self, key: Hashable) -> IO[bytes]:
        """Take the build lock of ``key``, waiting while another process builds it; give the
        file to :meth:`unlock` (from any thread)."""
        self._ready()
        prefix, _ = folder_name(key, ())
        fh = open(self.root / f"{prefix}lock", "a+b")  # noqa: SIM115 - held across threads
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except BaseException:
            fh.close()
            raise
        return fh

    @staticmethod
    def unlock(fh: IO[bytes]) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _write(folder: Path, g: NetworkGraph) -> None:
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(g, name)))
    for name in TEXTS:
        np.save(folder / f"{name}.npy", np.array(getattr(g, name), dtype=str))
    indptr, incident = g.incidence
    np.save(folder / "incidence_indptr.npy", indptr)
    np.save(folder / "incidence_segs.npy", incident)
    vs = g.valve_segments
    for name in SEGMENTS:
        np.save(folder / f"vs_{name}.npy", getattr(vs, name))
    valves = g.valves
    for field in VALVE_COLUMNS:
        values = [getattr(v, field) for v in valves]
        kind: Any = np.int64 if field in ("seg", "node") else str
        np.save(folder / f"valve_{field}.npy", np.array(values, dtype=kind))
    meta = {"format": FORMAT, "network": g.network, "built_at": time.time()}
    (folder / "meta.json").write_text(json.dumps(meta))


class TextColumn(Sequence[str]):
    """A mapped array of text read as ``str`` item by item (no per-worker list of strings)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [str(x) for x in self.values[i]]
        return str(self.values[i])


class ValveTable(Sequence[Valve]):
    """The valves of a mapped graph, as :class:`Valve` rows made when asked for."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.seg, self.node = columns["seg"], columns["node"]
        self.ref = TextColumn(columns["ref"])
        self.valve_no = TextColumn(columns["valve_no"])
        self.state = TextColumn(columns["state"])

    def __len__(self) -> int:
        return len(self.seg)

    @overload
    def __getitem__(self, i: int) -> Valve: ...
    @overload
    def __getitem__(self, i: slice) -> list[Valve]: ...
    def __getitem__(self, i: int | slice) -> Valve | list[Valve]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return Valve(
            int(self.seg[i]), int(self.node[i]), self.ref[i], self.valve_no[i], self.state[i]
        )


def _read(folder: Path, meta: dict[str, Any]) -> NetworkGraph:
    def arr(name: str) -> np.ndarray:
        # a plain array over the mapped pages (np.memmap's subclass costs on every slice)
        return np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r"))

    columns: dict[str, Any] = {name: arr(name) for name in ARRAYS}
    columns.update((name, TextColumn(arr(name))) for name in TEXTS)
    g = NetworkGraph(
        network=meta["network"],
        valves=ValveTable({f: arr(f"valve_{f}") for f in VALVE_COLUMNS}),
        **columns,
    )
    # how old the build already is: the in-process cache counts the maximum age from the build
    g.age_s = max(0.0, time.time() - meta["built_at"])
    # the cached properties, as built by the first worker
    g.__dict__["incidence"] = (arr("incidence_indptr"), arr("incidence_segs"))
    g.__dict__["valve_segments"] = _ValveSegments(*(arr(f"vs_{name}") for name in SEGMENTS))
    return g
