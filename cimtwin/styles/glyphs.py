"""SDF glyph ranges (MapLibre's ``glyphs`` PBFs) made from local fonts, so label layers
render without a glyph CDN, Chinese names included.

A font stack is a fallback chain of fonts, tried per code point: a Latin font first
(DejaVu Sans: Latin, Greek, Cyrillic, symbols), then a CJK font (WenQuanYi Micro Hei from
Debian's ``fonts-wqy-microhei``) for what the Latin one lacks, so ``19968-20223`` (一...) and
the other CJK ranges are not empty while Latin text keeps its own shapes.

Each glyph is rasterised with FreeType at 24 px and turned into a signed distance field the
way MapLibre's own TinySDF does (3 px buffer, radius 8, cutoff 0.25); the protobuf
(fontstack > glyph{id, bitmap, width, height, left, top, advance}) is written by hand. All
glyphs of a stack share the first font's ascender, so mixed Latin/CJK labels share a baseline.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

SIZE = 24
BUFFER = 3
RADIUS = 8.0
CUTOFF = 0.25
#: candidate Latin font files (first that exists wins); CIMTWIN_FONT_FILE overrides
LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
)
#: candidate CJK font files (first that exists wins); CIMTWIN_CJK_FONT_FILE overrides.
#: setup installs fonts-wqy-microhei (1.6 MB download, one TTC); the others are used if present
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
#: font stack name used by the styles -> its fallback chain: (env override, candidates) per link
FONTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "cimtwin Sans": (("CIMTWIN_FONT_FILE", LATIN_FONTS), ("CIMTWIN_CJK_FONT_FILE", CJK_FONTS)),
}


def _pick(env: str, candidates: tuple[str, ...]) -> Path | None:
    override = os.environ.get(env)
    if override and Path(override).is_file():
        return Path(override)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def font_files(stack: str) -> list[Path]:
    """The fonts glyphs of ``stack`` come from, in fallback order (each name of a
    comma-separated stack in turn; an unknown name adds nothing, except CIMTWIN_FONT_FILE)."""
    out: list[Path] = []
    for name in (n.strip() for n in stack.split(",")):
        for env, candidates in FONTS.get(name, ()):
            path = _pick(env, candidates)
            if path is not None and path not in out:
                out.append(path)
    if not out:
        override = _pick("CIMTWIN_FONT_FILE", ())
        if override is not None:
            out.append(override)
    return out


def font_file(stack: str) -> Path | None:
    """The first (Latin) font of ``stack``."""
    files = font_files(stack)
    return files[0] if files else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint((num << 3) | wire)
    if wire == 0:
        assert isinstance(payload, int), "a varint field carries an int"
        return key + _varint(payload)
    assert isinstance(payload, bytes), "a length-delimited field carries bytes"
    return key + _varint(len(payload)) + payload


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 31)


def _sdf(alpha: np.ndarray) -> np.ndarray:
    """8-bit signed distance field of a coverage bitmap (with the buffer already added)."""
    inside = alpha >= 128
    if not inside.any():
        return np.zeros(alpha.shape, dtype=np.uint8)
    d_out = distance_transform_edt(~inside)
    d_in = distance_transform_edt(inside)
    dist = d_out - d_in  # positive outside the glyph
    val = 255 - 255 * (dist / RADIUS + CUTOFF)
    return np.clip(np.round(val), 0, 255).astype(np.uint8)


def known_stack(stack: str) -> str | None:
    """The canonical form of ``stack``: its names that are in :data:`FONTS`, each once, in
    the stack's order (the fallback order); None when it names no font of ours.

    A glyph request is cheap to make and a rendered range costs 50-200 ms, so only stacks
    that name a known font are rendered, and all spellings of one ('cimtwin Sans,foo',
    ' cimtwin Sans') share one cache entry: made-up stack strings neither cost renders
    nor fill the cache."""
    known = dict.fromkeys(n.strip() for n in stack.split(",") if n.strip() in FONTS)
    return ",".join(known) or None


def glyph_range(stack: str, start: int) -> bytes:
    """The PBF for code points start..start+255 of ``stack``: each code point from the first
    font of the chain that has it (empty glyph list if none has any); rendered once per
    canonical stack (:func:`known_stack`) and range. ``LookupError`` when the stack names no
    known font."""
    canonical = known_stack(stack)
    if canonical is None:
        raise LookupError(f"no known font in stack {stack!r}")
    return _glyph_range(canonical, start)


@lru_cache(maxsize=512)
def _glyph_range(stack: str, start: int) -> bytes:
    import freetype

    name = stack.split(",")[0].strip()
    glyphs = b""
    faces = []
    for path in font_files(stack):
        face = freetype.Face(str(path))
        face.set_pixel_sizes(0, SIZE)
        faces.append(face)
    ascender = faces[0].size.ascender >> 6 if faces else 0
    for cp in range(start, start + 256):
        face = next((f for f in faces if f.get_char_index(cp)), None)
        if face is None:
            continue
        face.load_char(cp, freetype.FT_LOAD_RENDER | freetype.FT_LOAD_TARGET_NORMAL)
        g = face.glyph
        bmp = g.bitmap
        w, h = bmp.width, bmp.rows
        body = _field(1, 0, cp)
        if w and h:
            cov = np.array(bmp.buffer, dtype=np.uint8).reshape(h, bmp.pitch)[:, :w]
            padded = np.zeros((h + 2 * BUFFER, w + 2 * BUFFER), dtype=np.uint8)
            padded[BUFFER : BUFFER + h, BUFFER : BUFFER + w] = cov
            body += _field(2, 2, _sdf(padded).tobytes())
        body += _field(3, 0, w) + _field(4, 0, h)
        body += _field(5, 0, _zigzag(g.bitmap_left))
        body += _field(6, 0, _zigzag(g.bitmap_top - ascender))
        body += _field(7, 0, g.advance.x >> 6)
        glyphs += _field(3, 2, body)
    stack_msg = _field(1, 2, name.encode()) + _field(2, 2, f"{start}-{start + 255}".encode())
    return _field(1, 2, stack_msg + glyphs)
