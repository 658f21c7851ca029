"""Reading what surveyors deliver: GIS layers (any GDAL format, via pyogrio), CSV in UTF-8 or
GBK/GB18030, XLSX, and matching their local column names to cimtwin's fields.

Table rows are reported by the line a surveyor sees in Excel or a text editor: the header is
line 1, the first data row line 2.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import yaml

from cimtwin.errors import UserError

if TYPE_CHECKING:  # GDAL and geopandas load only for GIS layers, not for survey tables
    import geopandas as gpd

TABLE_SUFFIXES = {".csv", ".txt", ".xlsx", ".xlsm"}
HEADER_LINE = 1


def line_numbers(index: np.ndarray | pd.Index) -> np.ndarray:
    """0-based data row positions -> the line numbers a surveyor sees."""
    return np.asarray(index) + HEADER_LINE + 1


# --- tables ---------------------------------------------------------------------------------
@dataclass
class Table:
    path: Path
    sheet: str | None
    frame: pd.DataFrame  # every cell a string ('' when empty)
    encoding: str | None

    @property
    def label(self) -> str:
        return f"{self.path.name}[{self.sheet}]" if self.sheet else self.path.name


def decode_text(path: Path) -> tuple[str, str]:
    """UTF-8 (with or without BOM) when it decodes, else GB18030 (a superset of GBK)."""
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc), ("utf-8" if enc == "utf-8-sig" else "gb18030")
        except UnicodeDecodeError:
            continue
    raise UserError(f"{path}: neither UTF-8 nor GBK/GB18030 text")


def read_tables(
    path: Path,
    mapping: dict[str, dict[str, list[str]]] | None = None,
) -> list[Table]:
    """All tables in a CSV (one) or XLSX (one per non-empty sheet), cells as strings.

    A sheet's header is the row among its first :data:`HEADER_SEARCH_ROWS` that holds the
    most known column names (``mapping``'s aliases, the shipped ones by default): surveyors'
    workbooks often carry a title row, or a blank row, above it."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".xlsx", ".xlsm") and path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); export the table again")
    if suffix in (".csv", ".txt"):
        frame = _arrow_utf8_csv(path)
        if frame is not None:
            return [Table(path, None, frame, "utf-8")]
        text, enc = decode_text(path)  # GBK, or a table only pandas reads
        # UTF-8 has had Arrow's try above: only GBK text is given it here
        frame = None if enc == "utf-8" else _arrow_csv(text.encode("utf-8"))
        if frame is None:
            try:
                frame = pd.read_csv(
                    io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
                )
            except pd.errors.EmptyDataError:
                raise UserError(
                    f"{path}: holds no table (no header line); export the table again"
                ) from None
            except pd.errors.ParserError as exc:
                raise UserError(f"{path}: not a readable CSV table ({exc})") from exc
            frame = _clean(frame)
        return [Table(path, None, frame, enc)]
    if suffix in (".xlsx", ".xlsm"):
        return _workbook_tables(path, mapping)
    if suffix == ".xls":
        raise UserError(
            f"{path}: old Excel .xls workbooks are not read; save it as XLSX "
            "(or CSV) and import that"
        )
    raise UserError(f"{path}: unsupported table format {suffix!r} (CSV or XLSX expected)")


#: workbook rows made into Arrow text at a time
SHEET_BATCH_ROWS = 20_000


def _workbook_tables(path: Path, mapping: dict[str, dict[str, list[str]]] | None) -> list[Table]:
    """Each non-empty sheet of a workbook, read by calamine (Rust): openpyxl took 166 s and
    810 MB for a district's two survey sheets, calamine 10 s. The sheet's rows are taken one
    at a time from calamine's cells and made into Arrow text a batch at a time: the sheet as
    rows of Python values (``to_python``) held 250 MB more at once."""
    from python_calamine import CalamineWorkbook

    try:
        wb = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises several kinds for a broken file
        raise UserError(f"{path}: not a readable XLSX workbook ({exc})") from exc
    known = known_headers(mapping or default_mapping())
    out = []
    for name in wb.sheet_names:
        try:
            # rows from the sheet's first (empty rows included: line numbers stay Excel's)
            rows = iter(wb.get_sheet_by_name(name).iter_rows())
            head = list(itertools.islice(rows, HEADER_SEARCH_ROWS))
        except Exception as exc:
            raise UserError(f"{path}[{name}]: sheet not readable ({exc})") from exc
        at = header_row(head, known)
        if at is None:
            continue
        names = ["" if h is None else str(h) for h in head[at]]
        try:
            columns = _sheet_columns(itertools.chain(head[at + 1 :], rows), len(names))
        except Exception as exc:
            raise UserError(f"{path}[{name}]: sheet not readable ({exc})") from exc
        del head, rows
        frame = pd.DataFrame(dict(enumerate(columns)), copy=False)
        frame.columns = names
        frame = _clean(frame)
        frame.index = frame.index + at  # line numbers count the rows above the header
        out.append(Table(path, name, frame, None))
    return out


def _sheet_columns(
    rows: Iterator[Sequence[Any]], width: int
) -> list[pd.api.extensions.ExtensionArray]:
    """The cells of ``width`` columns as Arrow-backed text (a short row's missing cells
    empty)."""
    chunks: list[list[pa.Array]] = [[] for _ in range(width)]
    while batch := list(itertools.islice(rows, SHEET_BATCH_ROWS)):
        for j in range(width):
            cells = [_sheet_cell(r[j]) if j < len(r) else "" for r in batch]
            chunks[j].append(pa.array(cells, type=pa.string()))
    text = pd.StringDtype("pyarrow", na_value=np.nan)
    return [pd.array(pa.chunked_array(c, type=pa.string()), dtype=text) for c in chunks]


HEADER_SEARCH_ROWS = 10
HEADER_MIN_HITS = 2


def known_headers(mapping: dict[str, dict[str, list[str]]]) -> set[str]:
    """Every alias of every field, normalised as :func:`resolve_columns` compares them."""
    return {_norm(a) for fields in mapping.values() for aliases in fields.values() for a in aliases}


def header_row(rows: Sequence[Sequence[Any]], known: set[str]) -> int | None:
    """The 0-based row holding the header: of the first rows, the one with the most known
    column names (two at least: a data cell may equal one); else the first non-empty row
    (None: the sheet is empty)."""
    best, best_hits, first = None, HEADER_MIN_HITS - 1, None
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        cells = [str(v) for v in row if v is not None and str(v).strip()]
        if not cells:
            continue
        first = i if first is None else first
        hits = sum(_norm(c) in known for c in cells)
        if hits > best_hits:
            best, best_hits = i, hits
    return best if best is not None else first


UTF8_BOM = b"\xef\xbb\xbf"


def padded(values: pa.Array | pa.ChunkedArray | pd.Series) -> bool:
    """Whether some text cell starts or ends with whitespace, as ``str.strip`` sees it
    (Unicode's, the full-width space U+3000 of Chinese tables included): Arrow trims in C++
    and compares. Only such columns are trimmed (trimming copies); a regex ``^\\s|\\s$``
    missed U+3000 (its classes are ASCII) and took 4x as long."""
    arr = pa.array(values, from_pandas=True) if isinstance(values, pd.Series) else values
    return bool(pc.any(pc.not_equal(pc.utf8_trim_whitespace(arr), arr)).as_py())


def _arrow_utf8_csv(path: Path) -> pd.DataFrame | None:
    """A UTF-8 CSV table straight from its bytes (see :func:`_arrow_csv`); None when it is not
    UTF-8 or needs pandas' leniency.

    Decoding a district's survey table into one Python string and encoding it again for the
    parser held the file three times over: a quarter of a pipelines import's peak memory."""
    raw = path.read_bytes()
    return _arrow_csv(raw[len(UTF8_BOM) :] if raw.startswith(UTF8_BOM) else raw)


def _arrow_csv(raw: bytes) -> pd.DataFrame | None:
    """A plain UTF-8 CSV table through Arrow's parser into Arrow-backed text columns, cells
    trimmed and blank rows dropped as :func:`_clean` does; None when the table is not UTF-8 or
    needs pandas' leniency (duplicate or blank headers, short rows, a space before a quote), so
    that both readers always give the same frame.

    Arrow reads a survey table of 200 000 points about eight times faster than pandas."""
    end = raw.find(b"\n")
    try:
        first = (raw if end < 0 else raw[:end]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    header = next(csv.reader(io.StringIO(first)), None)
    if (
        not header
        or len(set(header)) != len(header)
        or any(not h.strip() for h in header)
        or (b'"' in raw and re.search(rb',[ \t]+"', raw))
    ):
        return None
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(raw),
            # one thread: the parallel parser's block buffers doubled the table's footprint
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                # large_string: what pandas' text columns hold, so no copy on conversion
                column_types=dict.fromkeys(header, pa.large_string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not UTF-8, or a ragged row
        return None
    if table.column_names != header:
        return None
    columns = [pc.utf8_trim_whitespace(col) if padded(col) else col for col in table.columns]
    table = pa.table(columns, names=[h.strip() for h in header])
    blank = pc.equal(table.column(0), "")
    for col in table.columns[1:]:
        blank = pc.and_(blank, pc.equal(col, ""))
    if not pc.any(blank).as_py():
        return table.to_pandas()
    kept = pc.invert(blank)
    # the rows keep their positions: a blank row must not move the line numbers after it
    frame = table.filter(kept).to_pandas()
    frame.index = pd.Index(np.flatnonzero(kept.to_numpy(zero_copy_only=False)))
    return frame


def _sheet_cell(v: object) -> str:
    """A calamine cell as text: Excel keeps every number as a float, so a whole one is written
    as an integer, as the sheet shows it (point numbers, years, sizes)."""
    if v is None or v == "":
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.loc[:, [c for c in frame.columns if str(c).strip()]]
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(
        lambda s: (s if pd.api.types.is_string_dtype(s) else s.astype(str)).str.strip()
    )
    empty = (frame == "").all(axis=1)
    # the rows keep their positions: a blank row must not move the line numbers after it
    return frame.loc[~empty]


# --- column mapping ----------------------------------------------------------------------------
def _norm(name: str) -> str:
    name = re.sub(r"[（(][^)）]*[)）]", "", str(name))  # drop units in brackets
    return re.sub(r"[\s_\-]", "", name).lower()


@lru_cache
def default_mapping() -> dict[str, dict[str, list[str]]]:
    text = (
        resources.files("cimtwin.importers")
        .joinpath("mappings/default.yaml")
        .read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


def load_mapping(user: Path | None) -> dict[str, dict[str, list[str]]]:
    """The shipped aliases, with a user's aliases (if any) tried first."""
    merged = {k: {f: list(a) for f, a in v.items()} for k, v in default_mapping().items()}
    if user is None:
        return merged
    try:
        extra = yaml.safe_load(user.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{user}: cannot read the mapping file ({exc})") from exc
    if not isinstance(extra, dict):
        raise UserError(f"{user}: a mapping file maps section -> field -> [header, ...]")
    for section, fields in extra.items():
        if not isinstance(fields, dict):
            raise UserError(f"{user}: section {section!r} must map field -> [header, ...]")
        for fld, aliases in fields.items():
            aliases = [aliases] if isinstance(aliases, str) else list(aliases)
            merged.setdefault(section, {}).setdefault(fld, [])
            merged[section][fld] = aliases + merged[section][fld]
    return merged


def resolve_columns(
    columns: list[str], section: str, mapping: dict[str, dict[str, list[str]]]
) -> dict[str, str]:
    """Canonical field -> the column that holds it (fields with no column are left out)."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    out: dict[str, str] = {}
    for fld, aliases in mapping.get(section, {}).items():
        for a in aliases:
            col = by_norm.get(_norm(a))
            if col is not None:
                out[fld] = col
                break
    return out


def require(found: dict[str, str], needed: list[str], label: str, columns: list[str]) -> None:
    missing = [f for f in needed if f not in found]
    if missing:
        raise UserError(
            f"{label}: no column for {', '.join(missing)} (headers found: {', '.join(columns)});"
            " pass --mapping FILE to name your columns"
        )


def _floats(series: pd.Series) -> np.ndarray | None:
    """Arrow's C++ parser for a column whose filled cells are all numbers, else None.

    A survey table has a dozen numeric columns of a few hundred thousand cells; pandas'
    ``to_numeric`` parses them a cell at a time in Python objects, Arrow ten times faster."""
    try:
        arr = pa.array(series, type=pa.string())
        filled = pc.not_equal(arr, "")
        values = pc.cast(pc.if_else(filled, arr, None), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if pc.any(pc.and_(filled, pc.is_nan(values))).as_py():
        return None  # "nan" typed in a cell: the slow path reports it as not a number
    return values.to_numpy(zero_copy_only=False)


def parse_numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells to floats (blanks and text that is not a number become NaN) and a mask of the
    cells that are filled but not a number, from one parse."""
    fast = _floats(series)
    if fast is not None:
        return fast, np.zeros(len(series), dtype=bool)
    filled = (series != "").to_numpy()
    values = pd.to_numeric(series.where(filled, np.nan), errors="coerce").to_numpy(float)
    return values, filled & np.isnan(values)


# --- GIS layers --------------------------------------------------------------------------------
@dataclass
class Layer:
    path: Path
    name: str
    frame: gpd.GeoDataFrame  # index = feature id as the file numbers it
    crs: str | None  # as declared by the file (None: no CRS)
    encoding_note: str | None = None  # how the text encoding was found, when it was guessed

    @property
    def label(self) -> str:
        return (
            f"{self.path.name}:{self.name}"
            if self.path.suffix.lower() == ".gpkg"
            else (self.path.name)
        )


TABLE_ONLY_SUFFIXES = TABLE_SUFFIXES | {".xls"}
#: DBF language driver ids (header byte 29) of the Chinese code pages (936: GBK)
DBF_LANGUAGE_DRIVERS = {0x4D: "GBK", 0x7A: "GBK"}
#: tried in this order on a DBF's records when neither a .cpg nor the header says
DBF_TRIAL_ENCODINGS = ("UTF-8", "GBK", "GB18030")


def check_vector_file(path: Path) -> None:
    """Refuse what GDAL would misread or fail on with a message of its own: an empty file,
    a table handed to a GIS import, a Shapefile without its attribute table."""
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); export the layer again")
    if path.suffix.lower() == ".xls":
        raise UserError(
            f"{path}: old Excel .xls workbooks are not read; save it as XLSX "
            "(or CSV) and import that"
        )
    if path.suffix.lower() == ".shp" and _sidecar(path, ".dbf") is None:
        raise UserError(
            f"{path}: no {path.stem}.dbf beside it (the Shapefile's attribute "
            "table); deliver the .shp with its .dbf, .shx and .prj"
        )


def _sidecar(path: Path, suffix: str) -> Path | None:
    for s in (suffix, suffix.upper()):
        if path.with_suffix(s).exists():
            return path.with_suffix(s)
    return None


def dbf_encoding(path: Path) -> tuple[str | None, str | None]:
    """The text encoding of a Shapefile with no .cpg, and a note saying how it was found.

    GDAL reads such a DBF as ISO-8859-1 unless its language driver byte names a code page,
    which turns GBK or UTF-8 text into garbage (or into invalid UTF-8 that Arrow refuses).
    The byte is tried first, then a strict decode of the records in UTF-8, GBK, GB18030.
    (None, None): GDAL's own reading is right (a .cpg, or plain ASCII text)."""
    dbf = _sidecar(path, ".dbf")
    if path.suffix.lower() != ".shp" or dbf is None or _sidecar(path, ".cpg") is not None:
        return None, None
    raw = dbf.read_bytes()
    if len(raw) < 32:
        return None, None
    ldid = raw[29]
    if ldid in DBF_LANGUAGE_DRIVERS:
        enc = DBF_LANGUAGE_DRIVERS[ldid]
        return enc, (f"no .cpg; text read as {enc} (DBF language driver byte 0x{ldid:02X})")
    header_len = int.from_bytes(raw[8:10], "little")
    records = raw[header_len:]
    if records.isascii():
        return None, None
    for enc in DBF_TRIAL_ENCODINGS:
        try:
            records.decode(enc)
        except UnicodeDecodeError:
            continue
        return enc, (
            f"no .cpg and no code page in the DBF header; text decodes as {enc}, "
            f"read as {enc} (add {path.stem}.cpg naming the encoding to be sure)"
        )
    raise UserError(
        f"{dbf}: the text is neither UTF-8 nor GBK/GB18030; add {path.stem}.cpg "
        "naming its encoding (e.g. a file holding 'GBK')"
    )


def list_layers(path: Path) -> list[str]:
    import pyogrio

    check_vector_file(path)
    try:
        return [str(r[0]) for r in pyogrio.list_layers(path)]
    except Exception as exc:  # GDAL's errors vary by driver
        raise UserError(f"{path}: GDAL cannot open it as a vector dataset ({exc})") from exc


def read_layer(path: Path, layer: str | None = None) -> Layer:
    """One layer with its geometries; a file without geometries (a CSV or spreadsheet read by
    GDAL as a plain table) is refused."""
    import geopandas as gpd
    import pyogrio

    check_vector_file(path)
    encoding, note = dbf_encoding(path)
    try:
        frame = pyogrio.read_dataframe(
            path, layer=layer, fid_as_index=True, use_arrow=True, encoding=encoding
        )
        info = pyogrio.read_info(path, layer=layer, encoding=encoding)
    except Exception as exc:
        raise UserError(f"{path}: cannot read layer {layer or '(first)'} ({exc})") from exc
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        what = "a table" if path.suffix.lower() in TABLE_ONLY_SUFFIXES else "a layer"
        raise UserError(
            f"{path}: {what} without geometries; this import reads GIS layers "
            "(GeoPackage, Shapefile, GeoJSON ...) with point, line or polygon "
            "geometries"
        )
    crs = info.get("crs")
    name = layer or (list_layers(path)[0] if path.suffix.lower() == ".gpkg" else path.stem)
    return Layer(path, name, frame, crs, note)


def read_layer_batches(path: Path, layer: str | None, rows: int) -> Iterator[Layer]:
    """:func:`read_layer` a batch of ``rows`` features at a time, in file order: one Arrow
    stream, so a layer of any size is held a batch at a time. Only the first batch carries
    the encoding note (it is reported once)."""
    import geopandas as gpd
    import pyogrio
    import shapely

    check_vector_file(path)
    encoding, note = dbf_encoding(path)
    name = layer or (list_layers(path)[0] if path.suffix.lower() == ".gpkg" else path.stem)
    try:
        info = pyogrio.read_info(path, layer=layer, encoding=encoding)
        with pyogrio.open_arrow(
            path,
            layer=layer,
            encoding=encoding,
            return_fids=True,
            batch_size=rows,
            use_pyarrow=True,
            datetime_as_string=True,
        ) as (meta, reader):
            fields = list(reader.schema)
            geom = next((f.name for f in fields if _is_wkb(f)), None)
            if geom is None:
                what = "a table" if path.suffix.lower() in TABLE_ONLY_SUFFIXES else "a layer"
                raise UserError(
                    f"{path}: {what} without geometries; this import reads GIS layers "
                    "(GeoPackage, Shapefile, GeoJSON ...) with point, line or polygon "
                    "geometries"
                )
            fid = meta.get("fid_column") or "OGC_FID"
            # an empty layer is one empty batch, as read_layer gives an empty frame
            for batch in _at_least_one(reader):
                table = pa.Table.from_batches([batch], schema=reader.schema)
                shapes = shapely.from_wkb(table.column(geom).to_numpy(zero_copy_only=False))
                frame = table.drop_columns([fid, geom]).to_pandas()
                frame.index = pd.Index(table.column(fid).to_numpy(), name="fid")
                del table
                yield Layer(
                    path, name, gpd.GeoDataFrame(frame, geometry=shapes), info.get("crs"), note
                )
                note = None
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot read layer {layer or '(first)'} ({exc})") from exc


def _at_least_one(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    empty = True
    for batch in reader:
        empty = False
        yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=reader.schema)


def _is_wkb(field: pa.Field) -> bool:
    meta = field.metadata or {}
    return meta.get(b"ARROW:extension:name") in (b"geoarrow.wkb", b"ogc.wkb")


def note_encoding(layer: Layer, report) -> None:
    """Say in the report which text encoding a layer was read in, when it was guessed."""
    if layer.encoding_note:
        report.warning(layer.label, None, "text-encoding-guessed", layer.encoding_note)


def canonical_frame(
    frame: pd.DataFrame,
    section: str,
    mapping: dict[str, dict[str, list[str]]],
    needed: list[str],
    label: str,
) -> pd.DataFrame:
    """The attribute columns renamed to cimtwin's field names (geometry left out)."""
    columns = [c for c in frame.columns if c != "geometry"]
    found = resolve_columns(columns, section, mapping)
    if frame.empty:  # no features, often no columns either: "no rows" is the runner's to say
        return pd.DataFrame(
            {f: pd.Series(dtype=object) for f in [*found, *needed]}, index=frame.index
        )
    require(found, needed, label, columns)
    # the columns as they are (Arrow-backed text stays so): to_numpy() made a Python object per
    # cell, a third of a district's components import's peak memory
    out = pd.DataFrame({f: frame[c] for f, c in found.items()}, index=frame.index)
    return out


def text_column(series: pd.Series, compact: bool = False) -> pd.Series:
    """Strings with blanks as None (GIS drivers give None, NaN or '' for empty); vectorised.

    ``compact``: kept as Arrow-backed text with blanks as NA, instead of a Python object per
    cell (about 60 bytes each: 30 MB a column for a district's components)."""
    if pd.api.types.is_float_dtype(series) and series.dropna().map(float.is_integer).all():
        series = series.astype("Int64")
    s = series.astype("string").str.strip()
    s = s.mask(s == "")
    if compact:
        return s
    return s.astype(object).where(s.notna(), None)
