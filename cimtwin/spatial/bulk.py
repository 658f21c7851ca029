"""Bulk writes and dataset replacement for any table of the model, through psycopg COPY.

Importers hand over a DataFrame whose columns are the model's column names; identifiers come
from the SQLAlchemy table (an allow-list), values travel as CSV in one COPY stream, geometries
as hex EWKB made by shapely in one vectorised call.
"""

from __future__ import annotations

import binascii
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from queue import Full, Queue
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import shapely
from psycopg import sql

from cimtwin import memory
from cimtwin.db.connect import one_row_sync
from cimtwin.settings import get_settings
from cimtwin.spatial.base import SRID, Base, schema_of, table_of
from cimtwin.spatial.sql_toolkit import identifier

T = TypeVar("T")
#: CSV sent between two heap trims (a trim walks the heap: not after every small chunk)
TRIM_EVERY_BYTES = 16 * 2**20
#: chunks made ahead of the COPY (each at most ``COPY_CHUNK_ROWS`` rows of CSV)
COPY_PREFETCH = 1
#: rows per COPY chunk at most (fewer when ``import_chunk_rows`` says so): a chunk is in hand
#: three times (being made, queued, being sent), about 1 kB a pipe each time with its Arrow
#: table and CSV; 25 000 rows put the pipelines import's peak in its COPY (394 MiB), 10 000
#: take 16 MiB off it and are as fast
COPY_CHUNK_ROWS = 10_000


def qualified(model: type[Base]) -> sql.Composed:
    return identifier(model)


def reserve_ids(conn: psycopg.Connection, model: type[Base], n: int) -> np.ndarray:
    """Take ``n`` ids from the table's sequence, so children can reference rows before COPY."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    seq = one_row_sync(
        conn,
        "SELECT pg_get_serial_sequence(%s, 'id')",
        (f"{schema_of(model)}.{table_of(model).name}",),
    )[0]
    # one int8[] in binary: a district's 200 000 result rows took twice as long as tuples
    row = conn.execute(
        "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)",
        (seq, n),
        binary=True,
    ).fetchone()
    ids = np.asarray(row[0] if row else [], dtype=np.int64)
    if len(ids) != n:
        raise RuntimeError(f"{table_of(model).name}: asked for {n} ids, got {len(ids)}")
    return ids


def geometry_hex(geoms: np.ndarray | Sequence, dims: int = 2, srid: int = SRID) -> np.ndarray:
    """Hex EWKB with the SRID for COPY; ``dims`` must match the column (2, or 3 for Z)."""
    return wkb_hex(_wkb_of(geoms, dims), srid)


def _wkb_of(geoms: np.ndarray | Sequence, dims: int) -> np.ndarray:
    arr = np.asarray(geoms, dtype=object)
    if dims == 2 and shapely.has_z(arr).any():
        arr = shapely.force_2d(arr)
    return shapely.to_wkb(arr, include_srid=False, output_dimension=dims, byte_order=1)


def to_wkb(geoms: np.ndarray, dims: int) -> np.ndarray:
    """Little-endian WKB as :func:`wkb_hex` takes it: how an importer holds a few hundred
    thousand geometries until they are written (a fifth of their size as GEOS objects)."""
    return shapely.to_wkb(geoms, include_srid=False, output_dimension=dims, byte_order=1)


def points_wkb(coords: np.ndarray) -> pa.BinaryArray:
    """Little-endian WKB of points with ``coords`` (n, 2 or 3), built in numpy without a
    GEOS object each (their types carry the Z flag as :func:`ewkb_hex_arrow` expects)."""
    coords = np.ascontiguousarray(coords, dtype="<f8")
    n, d = coords.shape
    rows = np.empty(n, dtype=np.dtype([("order", "u1"), ("type", "<u4"), ("xyz", "<f8", (d,))]))
    rows["order"], rows["type"], rows["xyz"] = 1, _wkb_type(1, d), coords
    return _fixed_binary(rows)


def linestrings_wkb(coords: np.ndarray) -> pa.BinaryArray:
    """Little-endian WKB of lines of k vertices each, ``coords`` (n, k, 2 or 3): a district's
    straight pipes in one call (shapely made a GEOS line of each, then its WKB)."""
    coords = np.ascontiguousarray(coords, dtype="<f8")
    n, k, d = coords.shape
    rows = np.empty(
        n,
        dtype=np.dtype(
            [("order", "u1"), ("type", "<u4"), ("count", "<u4"), ("xyz", "<f8", (k, d))]
        ),
    )
    rows["order"], rows["type"], rows["count"], rows["xyz"] = 1, _wkb_type(2, d), k, coords
    return _fixed_binary(rows)


def _wkb_type(kind: int, dims: int) -> int:
    return kind | (0x80000000 if dims == 3 else 0)  # the extended (EWKB) Z flag


def _fixed_binary(rows: np.ndarray) -> pa.BinaryArray:
    size = rows.dtype.itemsize
    offsets = (np.arange(len(rows) + 1, dtype=np.int64) * size).astype(np.int32)
    # the rows' own memory as the data buffer (``tobytes`` held a second copy of a
    # district's 13 MB of pipe WKB while it was made)
    data = pa.py_buffer(np.ascontiguousarray(rows).view(np.uint8))
    return pa.Array.from_buffers(pa.binary(), len(rows), [None, pa.py_buffer(offsets), data])


def wkb_hex(wkb: np.ndarray | Sequence, srid: int = SRID) -> np.ndarray:
    """Hex EWKB from little-endian WKB (None stays None), as Python strings
    (:func:`ewkb_hex_arrow` made into an object array)."""
    return np.asarray(ewkb_hex_arrow(wkb, srid).to_numpy(zero_copy_only=False), dtype=object)


def ewkb_hex_arrow(
    wkb: np.ndarray | Sequence | pa.Array | pa.ChunkedArray, srid: int = SRID
) -> pa.StringArray:
    """Hex EWKB from little-endian WKB, as one Arrow string array (None: null).

    The SRID is spliced into the WKB (the 0x20000000 flag on the type, then the SRID after
    it) rather than set on every geometry first: ``shapely.set_srid`` copies each geometry.
    It is done to the whole array's bytes at once, in numpy, and hex-encoded in one call:
    a Python loop over the geometries cost a district's import a fifth of a second per
    table."""
    if isinstance(wkb, pa.ChunkedArray):
        wkb = wkb.combine_chunks()
    arr = wkb if isinstance(wkb, pa.Array) else pa.array(np.asarray(wkb, dtype=object), pa.binary())
    if arr.offset:  # a slice: its own buffers, so offsets and bits start at 0
        arr = pa.concat_arrays([arr])
    n = len(arr)
    validity, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if data_buf is not None
        else np.empty(0, dtype=np.uint8)
    )
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    if (lengths[lengths > 0] < 5).any():
        raise ValueError("not WKB: a geometry shorter than its 5-byte header")
    filled = lengths > 0  # a null is an empty slot
    # byte 0: byte order; bytes 1-4: type, its high byte last (Z flag 0x80 there)
    tag = np.frombuffer(int(srid).to_bytes(4, "little"), dtype=np.uint8)
    out = np.insert(data, np.repeat(starts[filled] + 5, 4), np.tile(tag, int(filled.sum())))
    grown = np.concatenate([[0], np.cumsum(lengths + np.where(filled, 4, 0))]).astype(np.int64)
    out[grown[:-1][filled] + 4] |= 0x20
    text = binascii.hexlify(out.tobytes())
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer((grown * 2).astype(np.int32)), pa.py_buffer(text)],
        null_count=arr.null_count,
    )


def _is_arrow_binary(column: pd.Series) -> bool:
    dtype = column.dtype
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_binary(dtype.pyarrow_dtype)


def is_wkb(values: np.ndarray) -> bool:
    """A geometry column held as WKB (see :func:`to_wkb`), not as shapely geometries."""
    first = next((v for v in values if v is not None), None)
    return isinstance(first, bytes)


def csv_chunk(chunk: pd.DataFrame) -> pa.Buffer | bytes:
    """CSV for COPY: NULL as an unquoted empty field, text always quoted (so '' stays '').

    pyarrow formats in C++, into a buffer that is sent as it is (not copied into bytes);
    columns it cannot type (mixed objects) fall back to pandas.
    """
    try:
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        out = pa.BufferOutputStream()
        pa_csv.write_csv(
            table, out, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
        )
        del table
        return out.getvalue()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return chunk.to_csv(header=False, index=False, na_rep="").encode()


def is_partitioned(model: type[Base]) -> bool:
    """Tables stored one partition per import batch."""
    return bool(table_of(model).dialect_options["postgresql"].get("partition_by"))


def lock_partition_swaps(conn: psycopg.Connection, models: Sequence[type[Base]]) -> None:
    """Serialise imports that attach or drop partitions, for the rest of the transaction.

    Attaching a partition locks the parent table and then import_batch (to add the partition's
    foreign key), and dropping a detached one locks import_batch exclusively (its key
    triggers), while each import holds a lock on import_batch from reading it and inserting
    its batch row: two such imports took those locks in opposite orders and deadlocked. Taken
    before import_batch is first read, this lock puts them in one order. Imports of plain
    tables do not take it; they still run alongside (a swap waits for their commit)."""
    if any(is_partitioned(m) for m in models):
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('cimtwin'), hashtext(%s))", ("partition-swap",)
        )


def partition_name(model: type[Base], batch_id: int) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(f"{schema_of(model)}_part"),
        sql.Identifier(f"{table_of(model).name}_b{int(batch_id)}"),
    )


def fill_nulls(
    conn: psycopg.Connection, model: type[Base], target: sql.Composable, column: str, value: str
) -> int:
    """Give ``value`` to the rows of ``target`` (a staging partition of ``model``) whose
    ``column`` is NULL."""
    cur = conn.execute(
        sql.SQL("UPDATE {} SET {} = %s WHERE {} IS NULL").format(
            target,
            sql.Identifier(table_of(model).columns[column].name),
            sql.Identifier(table_of(model).columns[column].name),
        ),
        (value,),
    )
    return cur.rowcount


def geometry_dims(column) -> int:
    """2, or 3 for a Z geometry column (``geom("POINTZ")``)."""
    kind = str(getattr(column.type, "geometry_type", "") or "").upper()
    return 3 if kind.endswith("Z") else 2


def copy_frame(
    conn: psycopg.Connection,
    model: type[Base],
    frame: pd.DataFrame,
    on_rows=None,
    target: sql.Composable | None = None,
) -> int:
    """COPY ``frame`` into the model's table; a geometry column holds hex EWKB or shapely
    geometries (made into EWKB a chunk at a time).

    A thread formats the next chunks (EWKB, CSV) while one is sent, so the client's work
    overlaps the server's parsing, and only a few chunks' text is held at a time
    (:func:`prefetched`).
    """
    return copy_frames(conn, model, [frame], on_rows, target)


def copy_frames(
    conn: psycopg.Connection,
    model: type[Base],
    frames: Iterable[pd.DataFrame],
    on_rows=None,
    target: sql.Composable | None = None,
) -> int:
    """:func:`copy_frame` for a stream of frames with the same columns, in one COPY: each is
    made (a frame from a file read a batch at a time) only when the one before is sent."""
    table = table_of(model)
    allowed = {c.name: c for c in table.columns}
    stream = iter(frames)
    first = next(stream, None)
    if first is None:
        return 0
    unknown = [c for c in first.columns if c not in allowed]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    cols = list(first.columns)
    json_cols = [c for c in cols if allowed[c].type.__class__.__name__ == "JSONB"]
    geo_cols = {
        c: geometry_dims(allowed[c])
        for c in cols
        if allowed[c].type.__class__.__name__ == "Geometry"
    }
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        target or qualified(model), sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    )
    rows = min(get_settings().import_chunk_rows, COPY_CHUNK_ROWS)

    def texts() -> Iterator[tuple[int, pa.Buffer | bytes]]:
        for frame in itertools.chain([first], stream):
            for start in range(0, len(frame), rows):
                chunk = frame.iloc[start : start + rows]
                made: dict[str, object] = {}
                for c, dims in geo_cols.items():
                    if _is_arrow_binary(chunk[c]):  # WKB built by points_wkb & co.
                        made[c] = pd.arrays.ArrowExtensionArray(
                            ewkb_hex_arrow(pa.array(chunk[c].array))
                        )
                        continue
                    values = chunk[c].to_numpy(dtype=object)
                    if is_wkb(values):  # WKB in the column's dimensions
                        made[c] = pd.arrays.ArrowExtensionArray(ewkb_hex_arrow(values))
                    elif shapely.is_geometry(values).any():
                        made[c] = pd.arrays.ArrowExtensionArray(
                            ewkb_hex_arrow(_wkb_of(values, dims))
                        )
                for c in json_cols:
                    made[c] = [json.dumps(v, ensure_ascii=False) for v in chunk[c]]
                if made:
                    chunk = chunk.assign(**made)
                yield len(chunk), csv_chunk(chunk[cols])

    total, since_trim = 0, 0
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for n, text in prefetched(texts()):
            copy.write(text)
            since_trim += len(text)
            del text
            if since_trim >= TRIM_EVERY_BYTES:  # the chunks' EWKB and CSV, freed between rows
                memory.trim()
                since_trim = 0
            total += n
            if on_rows:
                on_rows(n)
    return total


def prefetched(items: Iterator[T], depth: int = COPY_PREFETCH) -> Iterator[T]:
    """``items``, each made in a background thread while the one before is being sent.

    The next chunk's EWKB and CSV are made while the server takes the last one, as psycopg's
    queued writer does, but with ``depth`` chunks in hand at most: that writer queues up to
    1024 blocks of 128 kB (128 MB) when the server is the slower side, as it is for a
    district's pipes. The producer stops when the consumer does (an error in the COPY)."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(("item", item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(("error", exc))

    worker = threading.Thread(target=produce, name="cimtwin-copy-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def delete_batches(conn: psycopg.Connection, model: type[Base], batch_ids: Sequence[int]) -> int:
    """Remove the rows that earlier imports of a dataset wrote (replace, never duplicate)."""
    if not batch_ids:
        return 0
    if is_partitioned(model):
        # detached first: a partition that other tables' keys point at (a network's nodes
        # and pipes) cannot be dropped while attached, and detaching checks no row still
        # references it
        for b in batch_ids:
            part = partition_name(model, b)
            exists = conn.execute("SELECT to_regclass(%s)", (part.as_string(conn),)).fetchone()
            if exists and exists[0] is not None:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(qualified(model), part)
                )
                conn.execute(sql.SQL("DROP TABLE {}").format(part))
        return len(batch_ids)
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE batch_id = ANY(%s)").format(qualified(model)),
        (list(batch_ids),),
    )
    return cur.rowcount
