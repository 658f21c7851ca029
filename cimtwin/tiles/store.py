"""Where tile builds write: a local folder or an fsspec URL (``file://``, ``s3://``, ...).

A :class:`Store` is plain data (the URL and its storage options), so a tile job carries it to
a Dask worker, which opens the same filesystem there and writes its own tiles; the driver
writes tileset.json and build.json through the same class. Credentials come from the
filesystem's usual places (``AWS_*`` for s3fs, fsspec's ``FSSPEC_S3_ENDPOINT_URL`` style
variables) or from the storage options (``--storage-options``, a JSON object).

Writes are whole-file: a local file is written beside its name and renamed over it, an object
is one PUT; so a reader never sees half a tile. ``memory://`` lives inside one process: a
build with workers in other processes cannot write there (:meth:`Store.require_shared`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cimtwin.errors import UserError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: the environment variable holding default storage options (a JSON object)
OPTIONS_ENV = "CIMTWIN_TILES_STORAGE_OPTIONS"
LOCAL_PROTOCOLS = frozenset({"file", "local"})
#: filesystems private to the process that opened them
PRIVATE_PROTOCOLS = frozenset({"memory"})


def parse_options(text: str | None) -> dict:
    """Storage options from ``--storage-options`` (a JSON object); a clear error otherwise."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"--storage-options: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UserError("--storage-options: give a JSON object, e.g. '{\"anon\": false}'")
    return value


@lru_cache(maxsize=16)
def _filesystem(protocol: str, options: str) -> AbstractFileSystem:
    import fsspec

    return fsspec.filesystem(protocol, **json.loads(options))


@dataclass(frozen=True)
class Store:
    """An output root: ``protocol`` and ``root`` (the filesystem's path of it) and the storage
    options as JSON (hashable, picklable)."""

    protocol: str
    root: str
    options: str = "{}"

    @property
    def local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    @property
    def fs(self) -> AbstractFileSystem:
        return _filesystem(self.protocol, self.options)

    @property
    def url(self) -> str:
        """What the user sees: a plain path for a local folder, else the URL."""
        return self.root if self.local else f"{self.protocol}://{self.root}"

    def location(self, rel: str = "") -> Path | str:
        """A file's place for messages and results: a Path when local, else its URL."""
        full = self.path(rel)
        return Path(full) if self.local else f"{self.protocol}://{full}"

    def path(self, rel: str = "") -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def child(self, name: str) -> Store:
        return Store(self.protocol, self.path(name), self.options)

    def split(self) -> tuple[Store, str]:
        """The folder holding this path and the file's name (a store opened on a file URL)."""
        return Store(self.protocol, posixpath.dirname(self.root), self.options), posixpath.basename(
            self.root
        )

    def require_shared(self, what: str) -> None:
        """Refuse a process-private store for work that runs in other processes."""
        if self.protocol in PRIVATE_PROTOCOLS:
            raise UserError(
                f"{self.url}: {self.protocol}:// is private to one process, so {what} cannot "
                "write there; give --workers 1, or a folder or object store every worker reaches"
            )

    def check_writable(self) -> None:
        """Write and remove a probe file, so a missing bucket, bad credentials or a read-only
        folder is one clear line before any work starts."""
        probe = ".cimtwin-write-check"
        try:
            self.write_bytes(probe, b"")
            self.remove(probe)
        except (OSError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{self.url}: cannot write there ({detail})") from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(posixpath.dirname(target)) / f".{posixpath.basename(target)}.{os.getpid()}"
            tmp.write_bytes(data)
            tmp.replace(target)
        else:
            self.fs.pipe_file(target, data)

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, None when there is none."""
        try:
            return self.fs.cat_file(self.path(rel))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def files(self, rel: str = "") -> set[str]:
        """Paths (relative to the root) of every file under ``rel``: one listing, not a
        request per tile (the listing cache is dropped first: workers wrote since)."""
        base = self.path(rel)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return set()
        prefix = self.root.rstrip("/") + "/"
        return {p[len(prefix) :] for p in (str(f) for f in found) if p.startswith(prefix)}

    def file_sizes(self, rel: str = "") -> dict[str, int]:
        """Size of every file under ``rel`` by path relative to it: one listing."""
        base = self.path(rel)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        prefix = base.rstrip("/") + "/"
        return {
            str(name)[len(prefix) :]: int(info.get("size") or 0)
            for name, info in found.items()
            if str(name).startswith(prefix) and info.get("type") != "directory"
        }

    def subfolders(self) -> list[str]:
        """Names of the folders directly under the root."""
        self.fs.invalidate_cache(self.root)
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            posixpath.basename(str(e["name"]).rstrip("/"))
            for e in entries
            if e.get("type") == "directory"
        )

    def remove(self, rel: str) -> None:
        """Remove one file; none there is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def remove_tree(self, rel: str = "") -> None:
        """Remove a folder and everything under it; none there is fine."""
        target = self.path(rel)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
        self.fs.invalidate_cache()

    def put_file(self, local: Path, rel: str) -> None:
        """Copy a finished local file in (an archive written locally first)."""
        target = self.path(rel)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            local.replace(target)
        else:
            self.fs.put_file(str(local), target)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))


def open_store(out: str | Path, options: dict | None = None) -> Store:
    """The store of ``out``: a local folder (a path or ``file://``) or an fsspec URL, with
    ``options`` (default: ``CIMTWIN_TILES_STORAGE_OPTIONS``); a clear error for an unknown
    protocol, a filesystem library that is not installed or a URL without a place."""
    import fsspec
    from fsspec.core import split_protocol

    if options is None:
        options = parse_options(os.environ.get(OPTIONS_ENV))
    text = str(out)
    protocol, path = split_protocol(text)
    if protocol is None or protocol in LOCAL_PROTOCOLS:
        if protocol is not None and options:
            raise UserError(f"{text}: a local folder takes no storage options")
        local = Path(path).expanduser()
        return Store("file", os.path.abspath(local))  # a worker's working folder may differ
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UserError(f"{text}: unknown storage protocol {protocol!r}") from None
    except ImportError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else protocol
        raise UserError(
            f"{text}: the {protocol}:// filesystem is not installed ({detail})"
        ) from None
    root = str(cls._strip_protocol(text)).rstrip("/")
    if not root or root == "/":
        raise UserError(f"{text}: give a place after {protocol}:// (bucket/folder)")
    options_json = json.dumps(options, sort_keys=True)
    try:
        _filesystem(protocol, options_json)
    except (TypeError, ValueError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{text}: cannot open that store ({detail})") from None
    return Store(protocol, root, options_json)
