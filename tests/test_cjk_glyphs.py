"""Chinese map labels: the glyph PBFs of the styles' font stack hold CJK glyphs (from the CJK
font setup installs), so grid, parcel and road names are drawn, not left out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cimtwin.settings import Settings
from cimtwin.styles import glyphs

ROOT = Path(__file__).resolve().parents[1]
STACK = "cimtwin Sans"  # the text-font of the styles


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message: varints and length-delimited only."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            out.append((num, value))
        elif wire == 2:
            size, i = _varint(buf, i)
            out.append((num, buf[i : i + size]))
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def parse_glyphs(pbf: bytes) -> tuple[str, str, dict[int, dict[str, int | bytes]]]:
    """(stack name, range, {code point: glyph fields}) of a MapLibre glyph PBF."""
    ((num, stack),) = _fields(pbf)
    assert num == 1 and isinstance(stack, bytes)
    name = rng = ""
    found: dict[int, dict[str, int | bytes]] = {}
    keys = {1: "id", 2: "bitmap", 3: "width", 4: "height", 5: "left", 6: "top", 7: "advance"}
    for num, value in _fields(stack):
        assert isinstance(value, bytes)
        if num == 1:
            name = value.decode()
        elif num == 2:
            rng = value.decode()
        elif num == 3:
            g = {keys[n]: v for n, v in _fields(value)}
            assert isinstance(g["id"], int)
            found[g["id"]] = g
    return name, rng, found


def sample_grid_name() -> str:
    gpkg = ROOT / "data_samples/north_station/gpkg/admin.gpkg"
    with sqlite3.connect(gpkg) as conn:
        (name,) = conn.execute("SELECT name FROM work_grid ORDER BY code LIMIT 1").fetchone()
    assert any(ord(ch) >= 0x4E00 for ch in name), name
    return name


def test_the_stack_has_a_cjk_font_after_the_latin_one() -> None:
    files = glyphs.font_files(STACK)
    assert len(files) == 2, (
        f"{STACK!r} has no CJK font ({files}): run scripts/setup.sh (installs fonts-wqy-microhei)"
    )
    assert "dejavu" in str(files[0]).lower(), files


def test_cjk_ranges_hold_the_glyphs_of_a_sample_grid_name() -> None:
    name = sample_grid_name()  # 民治社区第01网格
    for ch in dict.fromkeys(name):
        start = ord(ch) // 256 * 256
        stack, rng, found = parse_glyphs(glyphs.glyph_range(STACK, start))
        assert (stack, rng) == (STACK, f"{start}-{start + 255}")
        assert ord(ch) in found, f"no glyph for {ch!r} (U+{ord(ch):04X}) in {rng}"
        g = found[ord(ch)]
        w, h, bitmap, advance = g["width"], g["height"], g["bitmap"], g["advance"]
        assert isinstance(w, int) and isinstance(h, int) and isinstance(bitmap, bytes)
        assert w > 5 and h > 5 and len(bitmap) == (w + 6) * (h + 6), (ch, w, h, len(bitmap))
        assert max(bitmap) > 190, ch  # the SDF has an inside, not an empty box
        if "\u4e00" <= ch <= "\u9fff":
            assert advance == glyphs.SIZE, (ch, advance)  # ideographs are full-width


def test_the_first_cjk_range_is_full() -> None:
    _, _, found = parse_glyphs(glyphs.glyph_range(STACK, 19968))  # 一 U+4E00 ...
    assert len(found) == 256, len(found)


def test_latin_glyphs_keep_the_latin_font() -> None:
    import freetype

    face = freetype.Face(str(glyphs.font_files(STACK)[0]))
    face.set_pixel_sizes(0, glyphs.SIZE)
    _, _, found = parse_glyphs(glyphs.glyph_range(STACK, 0))
    for ch in "AWgm0":
        face.load_char(ch)
        assert found[ord(ch)]["advance"] == face.glyph.advance.x >> 6, ch
    # digits in a grid name share the baseline of the ideographs around them
    _, _, cjk = parse_glyphs(glyphs.glyph_range(STACK, ord("民") // 256 * 256))
    top_cjk, top_digit = cjk[ord("民")]["top"], found[ord("0")]["top"]
    assert isinstance(top_cjk, int) and isinstance(top_digit, int)
    unzig = lambda n: (n >> 1) ^ -(n & 1)  # noqa: E731
    assert abs(unzig(top_cjk) - unzig(top_digit)) <= 4, (unzig(top_cjk), unzig(top_digit))


def test_a_cjk_range_is_served_over_http(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    client = TestClient(create_app(settings))
    r = client.get(f"/fonts/{STACK}/19968-20223.pbf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    _, rng, found = parse_glyphs(r.content)
    assert rng == "19968-20223" and 0x4E00 in found, sorted(found)[:5]


@pytest.mark.parametrize("start", [19968, 0x7F00])
def test_one_cjk_range_renders_quickly(start: int) -> None:
    import time

    glyphs._glyph_range.cache_clear()
    t0 = time.perf_counter()
    glyphs.glyph_range(STACK, start)
    took = time.perf_counter() - t0
    assert took < 2.0, took  # ~50 ms here (0.14 s cold); rendered on request, then cached
    t0 = time.perf_counter()
    glyphs.glyph_range(STACK, start)
    assert time.perf_counter() - t0 < 0.01


def _counting_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stacks rendered from now on: ``font_files`` runs once per rendered (uncached) range."""
    calls: list[str] = []
    real = glyphs.font_files

    def counted(stack: str) -> list[Path]:
        calls.append(stack)
        return real(stack)

    glyphs._glyph_range.cache_clear()
    monkeypatch.setattr(glyphs, "font_files", counted)
    return calls


def test_unknown_font_stacks_are_404_without_rendering(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    renders = _counting_renders(monkeypatch)
    with TestClient(create_app(settings)) as client:
        for i in range(50):
            r = client.get(f"/fonts/Made Up {i},Arial Unicode MS Regular/0-255.pbf")
            assert r.status_code == 404, r.text
            assert "no known font" in r.json()["description"] and STACK in r.json()["description"]
    assert renders == []
    assert glyphs._glyph_range.cache_info().currsize == 0
    with pytest.raises(LookupError):
        glyphs.glyph_range("Noto Sans Regular", 0)


def test_spellings_of_a_known_stack_share_one_render(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    renders = _counting_renders(monkeypatch)
    variants = [STACK, f"{STACK},foo", f"foo, {STACK}", f" {STACK} ,{STACK},bar"]
    with TestClient(create_app(settings)) as client:
        bodies = {client.get(f"/fonts/{v}/0-255.pbf").content for v in variants}
    assert renders == [STACK]  # rendered once, for the canonical stack
    assert len(bodies) == 1
    stack, rng, found = parse_glyphs(bodies.pop())
    assert stack == STACK and rng == "0-255" and ord("A") in found
    assert glyphs.known_stack(f"x,{STACK},y") == STACK and glyphs.known_stack("x,y") is None
