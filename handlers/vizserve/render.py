"""Tiles to labelled PNG pictures, arrays to .npy bytes: the only place file formats are made.

Layout comes from :func:`torchvision.utils.make_grid`; Pillow draws the labels (torchvision has no text). Every
picture carries a title (wrapped to its width, clipped past a few lines); pictures of maps carry a colour bar with
the scale at its ticks.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

__all__ = [
    "COLORMAPS", "DIVERGING", "attribution_pngs", "b64", "colour_table", "grid_png", "image_png", "map_png",
    "matrix_png", "npy_bytes", "overlay_frames", "preview_png", "rgb_png", "strip_shape",
]  # fmt: skip

BACKGROUND = 0.12  # dark grey between tiles and behind labels
TEXT = 235  # light grey text
LABEL_H = 12  # label band above each tile
PAD = 2
#: Tiles are scaled by whole factors up to at least MIN_TILE px, and big maps down to at most MAX_TILE px.
MIN_TILE, MAX_TILE = 48, 128
_BG = round(BACKGROUND * 255)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font (Aileron) at ``size`` px where Pillow has FreeType, else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # no FreeType: the bitmap font, about 11 px high
        return ImageFont.load_default()


_FONT = _font(10)  # tile and axis labels
_TITLE_FONT = _font(13)
_TICK_FONT = _font(11)


def _line_box(font) -> tuple[int, int]:
    """Top and bottom of the font's glyphs ('Ag') below the point Pillow draws text at."""
    box = font.getbbox("Ag")
    return box[1], box[3]


_TITLE_TOP, _TITLE_BOTTOM = _line_box(_TITLE_FONT)
TITLE_LINE = _TITLE_BOTTOM - _TITLE_TOP + 4  # one title line, with its spacing (16 px at 13 px)
TITLE_H = TITLE_LINE + 4  # a title band of one line
TITLE_LINES = 3  # at most; a longer title ends in an ellipsis


def b64(data: bytes) -> str:
    """Base64 text of ``data``; also the ``default=`` of ``json.dumps`` for responses that hold bytes."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"cannot put {type(data).__name__} in JSON")
    return base64.b64encode(data).decode("ascii")


def npy_bytes(t: torch.Tensor) -> bytes:
    """``t`` as a float32 ``.npy`` file (C order)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(t.detach().cpu().float().numpy()), allow_pickle=False)
    return buf.getvalue()


def _png(img: Image.Image | np.ndarray) -> bytes:
    """8-bit greyscale or RGB PNG with the 'up' filter on every row, deflated at level 1 with run-length matching.

    Written here rather than through Pillow or torchvision (libpng) because both choose a filter per row by trying
    all five, which is most of their encoding time, and neither lets the caller fix it. On our grids of smooth maps
    'up' compresses as well: AlexNet features.0, 458 x 570 px, 2.3 ms and 163 kB here against Pillow's 5.6 ms and
    153 kB (level 1). Any PNG reader decodes it; the tests check it pixel for pixel against Pillow's decoder.
    """
    a = np.asarray(img, dtype=np.uint8)
    h, w = a.shape[:2]
    colour = 0 if a.ndim == 2 else 2  # PNG colour types: greyscale, truecolour
    flat = a.reshape(h, -1)
    rows = np.empty((h, flat.shape[1] + 1), np.uint8)
    rows[:, 0] = 2  # filter type 'up': each byte minus the byte above it (mod 256)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = z.compress(rows.tobytes()) + z.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] -> ``H x W`` (C = 1) or ``H x W x 3`` uint8."""
    a = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).contiguous().numpy()


def _fit(tiles: torch.Tensor) -> torch.Tensor:
    """Whole-factor nearest upscaling of small tiles (pixels stay crisp), area downscaling of large ones."""
    h, w = tiles.shape[-2:]
    side = max(h, w)
    if side < MIN_TILE:
        k = math.ceil(MIN_TILE / side)
        return F.interpolate(tiles, scale_factor=k, mode="nearest")
    if side > MAX_TILE:
        s = MAX_TILE / side
        return F.interpolate(tiles, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    return tiles


@functools.lru_cache(maxsize=4096)
def _glyph(font, ch: str) -> tuple[int, int, np.ndarray | None, float]:
    """One character as Pillow draws it: ``(left, top, coverage h x w uint8 or None, advance)``, its box relative
    to the point text is drawn at. Titles and ticks are put together from these, drawn once per character: Pillow
    lays out and rasterizes a whole line on every call (about 1 ms a title here)."""
    left, top, right, bottom = font.getbbox(ch)
    mask = None
    if right > left and bottom > top:
        img = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(img).text((-left, -top), ch, fill=255, font=font)
        mask = np.asarray(img)
    return left, top, mask, font.getlength(ch)


def _length(text: str, font) -> float:
    """Width of ``text`` in px, as :func:`_text` draws it (the sum of its characters' advances: no kerning)."""
    return sum(_glyph(font, ch)[3] for ch in text)


def _text(cover: np.ndarray, x: float, y: int, text: str, font) -> None:
    """Adds ``text``'s coverage to ``cover`` (uint8 ``H x W``, clipped to it), drawn at ``(x, y)`` as Pillow
    would place it."""
    h_all, w_all = cover.shape
    for ch in text:
        left, top, mask, advance = _glyph(font, ch)
        if mask is not None:
            x0, y0 = round(x) + left, y + top
            xs, ys = max(0, x0), max(0, y0)
            xe, ye = min(w_all, x0 + mask.shape[1]), min(h_all, y0 + mask.shape[0])
            if xs < xe and ys < ye:
                region = cover[ys:ye, xs:xe]
                np.maximum(region, mask[ys - y0 : ye - y0, xs - x0 : xe - x0], out=region)
        x += advance


def _painted(cover: np.ndarray, rgb: bool) -> np.ndarray:
    """Text coverage ``H x W`` as light text on the background: ``H x W (x 3)`` uint8."""
    grey = (_BG + (cover.astype(np.uint16) * (TEXT - _BG) + 127) // 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2) if rgb else grey


def _clipped(text: str, font, width: float) -> str:
    """``text`` cut to ``width`` px, ending in an ellipsis where it was cut."""
    if _length(text, font) <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _length(text[:mid].rstrip() + "...", font) <= width else (lo, mid - 1)
    return text[:lo].rstrip() + "..."


def title_lines(text: str, width: int, font=_TITLE_FONT, most: int = TITLE_LINES) -> list[str]:
    """``text`` wrapped at spaces to lines of at most ``width`` px, at most ``most`` of them (the last one then
    ends in an ellipsis); a word wider than a line is cut."""
    if _length(text, font) <= width:
        return [text]
    lines: list[str] = []
    for word in text.split():
        if lines and _length(f"{lines[-1]} {word}", font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > most:
        lines = lines[: most - 1] + [lines[most - 1] + " " + " ".join(lines[most:])]
    return [_clipped(line, font, width) for line in lines] or [""]


def _title_band(text: str, width: int, rgb: bool = True) -> np.ndarray:
    """The band above a picture with its title, ``H x width (x 3)`` uint8: one line (``TITLE_H`` px) or more."""
    lines = title_lines(text, width - 2 * PAD - 2)
    cover = np.zeros((TITLE_H + (len(lines) - 1) * TITLE_LINE, width), np.uint8)
    first = 2 + (TITLE_LINE - (_TITLE_BOTTOM - _TITLE_TOP)) // 2 - _TITLE_TOP
    for i, line in enumerate(lines):
        _text(cover, PAD + 1, first + i * TITLE_LINE, line, _TITLE_FONT)
    return _painted(cover, rgb)


def _titled(body: np.ndarray, title: str | None) -> np.ndarray:
    """``body`` (uint8 ``H x W (x 3)``) under its title band; as it is without a title."""
    if not title:
        return body
    return np.concatenate([_title_band(title, body.shape[1], body.ndim == 3), body], axis=0)


def grid_png(tiles: torch.Tensor, labels: list[str], title: str, *, nrow: int | None = None) -> bytes:
    """A grid of tiles, each with its label above it, under a title (wrapped to the grid's width).

    Args:
        tiles: ``[K, 1 or 3, h, w]`` floats in [0, 1] (CPU).
        labels: one short text per tile (the channel index).
        title: one line at the top, more where it is wider than the grid.
        nrow: tiles per row; default about square.
    """
    tiles = _fit(tiles.float().cpu())
    k, c, _, width = tiles.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(k)))
    bands = torch.stack([_label_band(text, width) for text in labels])  # [K, LABEL_H, w]
    banded = torch.cat([bands.unsqueeze(1).expand(-1, c, -1, -1), tiles], dim=2)
    grid = make_grid(banded, nrow=nrow, padding=PAD, pad_value=BACKGROUND)[:c]
    return _png(_titled(_to_uint8(grid), title))


@functools.lru_cache(maxsize=8192)
def _label_band(text: str, width: int) -> torch.Tensor:
    """The strip above a tile with its label, ``[LABEL_H, width]`` in [0, 1]; drawn once per label and width."""
    band = Image.new("L", (width, LABEL_H), _BG)
    ImageDraw.Draw(band).text((1, 0), text, fill=TEXT, font=_FONT)
    return torch.from_numpy(np.asarray(band, dtype=np.float32) / 255)


def matrix_png(cells: torch.Tensor, rows: list[int], cols: list[int], title: str) -> bytes:
    """A matrix of RGB cells ``[R, C, 3, kh, kw]`` with row numbers on the left and column numbers on top, under a
    title (wrapped to the matrix's width)."""
    r, c, _, kh, kw = cells.shape
    scale = max(1, math.ceil(12 / max(kh, kw)))
    flat = F.interpolate(cells.reshape(r * c, 3, kh, kw).float(), scale_factor=scale, mode="nearest")
    grid = make_grid(flat, nrow=c, padding=1, pad_value=BACKGROUND)
    left, top = 30, LABEL_H
    grid = F.pad(grid, (left, 0, top, 0), value=BACKGROUND)
    img = Image.fromarray(_to_uint8(grid), "RGB")
    draw = ImageDraw.Draw(img)
    fill = (TEXT,) * 3
    step_h, step_w = kh * scale + 1, kw * scale + 1
    every_r = max(1, math.ceil(12 / step_h))
    every_c = max(1, math.ceil(28 / step_w))
    for i in range(0, r, every_r):
        draw.text((2, top + 1 + i * step_h), str(rows[i]), fill=fill, font=_FONT)
    for j in range(0, c, every_c):
        draw.text((left + 1 + j * step_w, 0), str(cols[j]), fill=fill, font=_FONT)
    return _png(_titled(np.asarray(img), title))


#: Attribution pictures are enlarged by a whole factor until their short side is at least this (shapes: 64 -> 256).
MIN_PICTURE = 224
#: A clip's frames (more than one) are enlarged until their short side is at least this (motion: 64 -> 128), and
#: wrapped into rows of at most STRIP_COLUMNS frames and MAX_STRIP px (:func:`strip_shape`): 16 frames make 2 rows
#: of 8, about 1,040 px wide, where one row was 4,126 px and its title unreadable once a page fit it to its width.
MIN_FRAME = 112
STRIP_COLUMNS = 8
MAX_STRIP = 1040
#: Space between the input and its overlay (and between a clip's rows of input and overlay frames).
GAP = 8
BAR_H = 12  # the colour bar's height
MAX_BAR = 640  # and at most its width (a wider picture's bar is drawn from the left)
_TICK_TOP, _TICK_BOTTOM = _line_box(_TICK_FONT)
#: The colour bar below a map: a gap, the bar, tick marks and their labels.
BAR_BAND = 6 + BAR_H + 3 + (_TICK_BOTTOM - _TICK_TOP) + 6
#: How a map is laid over its input (:func:`attribution_pngs`): ``even``, every pixel ``opacity`` the map's colour
#: (Grad-CAM's usual picture); ``magnitude``, each pixel ``opacity * m ** MAGNITUDE_GAMMA`` the map's colour, with
#: ``m`` the map's magnitude there over its largest (``|value| / max``), over the input in grey: where the map says
#: nothing the input shows as it is (in grey, so that its own colours are not read as the map's), and a signed map's
#: white 0 does not wash it out. The gamma below 1 lifts the small values most of a pixel map's mass is in (0.35:
#: bench/overlay_contrast.py).
BLENDS = ("even", "magnitude")
MAGNITUDE_GAMMA = 0.35

#: The colour maps a request may name (option 'colormap'), by matplotlib's names. Looked up in this table only.
COLORMAPS = {
    "jet": "jet", "turbo": "turbo", "viridis": "viridis", "inferno": "inferno", "magma": "magma", "gray": "gray",
    "rdbu_r": "RdBu_r", "bwr": "bwr",
}  # fmt: skip
#: The colour map of signed maps: blue negative, white zero, red positive.
DIVERGING = "rdbu_r"


@functools.cache
def colour_table(name: str) -> np.ndarray:
    """The colour map ``name`` (a key of :data:`COLORMAPS`) as a 256 x 3 uint8 table, from matplotlib (Captum's
    dependency)."""
    from matplotlib import colormaps

    return (colormaps[COLORMAPS[name]](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def _enlarge(a: np.ndarray, side: int = MIN_PICTURE) -> np.ndarray:
    k = max(1, math.ceil(side / min(a.shape[:2])))
    return a.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else a


def _side_by_side(parts: list[np.ndarray], gap: int = PAD) -> np.ndarray:
    """Pictures of one height left to right, ``gap`` px of background apart."""
    if len(parts) == 1:
        return parts[0]
    space = np.full((parts[0].shape[0], gap, *parts[0].shape[2:]), _BG, np.uint8)
    return np.concatenate([part for p in parts for part in (p, space)][:-1], axis=1)


def _stacked(parts: list[np.ndarray], gap: int = PAD) -> np.ndarray:
    """Pictures of one width top to bottom, ``gap`` px of background apart."""
    space = np.full((gap, *parts[0].shape[1:]), _BG, np.uint8)
    return np.concatenate([part for p in parts for part in (p, space)][:-1], axis=0)


def strip_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """How :func:`attribution_pngs`, :func:`map_png`, :func:`image_png` and :func:`rgb_png` lay out ``frames``
    pictures of ``height x width`` px: ``(rows, columns, frame height, frame width)`` in px after enlarging.

    One picture (an image) is enlarged by a whole factor to at least ``MIN_PICTURE`` px on its short side; a clip's
    frames to at least ``MIN_FRAME``, then ``columns = min(frames, STRIP_COLUMNS, what fits in MAX_STRIP px)``,
    ``rows = ceil(frames / columns)``, and the columns evened out over the rows (``ceil(frames / rows)``). A strip is
    ``columns * frame width + (columns - 1) * PAD`` px wide and ``rows * frame height + (rows - 1) * PAD`` px high
    (16 frames of 64 px: 2 rows of 8 frames of 128 px, 1,038 x 258); in :func:`attribution_pngs` each row of input
    frames has its row of overlays below it (``PAD`` apart) and row pairs are ``GAP`` apart.
    """
    k = max(1, math.ceil((MIN_PICTURE if frames == 1 else MIN_FRAME) / min(height, width)))
    fh, fw = height * k, width * k
    fit = max(1, (MAX_STRIP + PAD) // (fw + PAD))
    columns = max(1, min(frames, STRIP_COLUMNS, fit))
    rows = math.ceil(frames / columns)
    return rows, math.ceil(frames / rows), fh, fw


def _rows(frames: list[np.ndarray]) -> list[np.ndarray]:
    """A clip's frames ``H x W (x 3)``, each enlarged for display, as :func:`strip_shape`'s rows (2 px between
    frames; the last row filled out with background)."""
    rows, columns, fh, _ = strip_shape(len(frames), *frames[0].shape[:2])
    k = fh // frames[0].shape[0]
    big = [f.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else f for f in frames]
    blank = np.full_like(big[0], _BG)
    big += [blank] * (rows * columns - len(big))
    return [_side_by_side(big[r * columns : (r + 1) * columns]) for r in range(rows)]


def _strip(frames: list[np.ndarray]) -> np.ndarray:
    """Frames ``H x W (x 3)`` as one picture: one frame enlarged for display, or a clip in rows (:func:`strip_shape`),
    time left to right and then down."""
    return _stacked(_rows(frames))


def _clip_title(title: str | None, frames: int, height: int, width: int) -> str | None:
    """A clip's title says how to read its frames."""
    if frames == 1 or not title:
        return title
    rows, columns, _, _ = strip_shape(frames, height, width)
    return f"{title}; {frames} frames, time to the right" + (f", {columns} a row" if rows > 1 else "")


def _coloured(where: torch.Tensor, colormap: str = "jet") -> np.ndarray:
    """Positions ``[*S]`` in [0, 1] along the colour map -> ``*S x 3`` uint8."""
    index = (where.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.take(colour_table(colormap), index, axis=0)  # 3x faster than table[index] here


def _colour_bar(colormap: str, ticks: Sequence[str], width: int) -> np.ndarray:
    """The band below a map: the colour map left (0) to right (1) over ``width`` px (at most ``MAX_BAR``), with
    ``ticks`` evenly along it (two: its ends; three: the ends and the middle), ``BAR_BAND x width x 3`` uint8."""
    band = np.full((BAR_BAND, width, 3), _BG, np.uint8)
    left, right = PAD, min(width, MAX_BAR) - PAD  # the bar spans columns left .. right - 1
    top = 6
    steps = np.linspace(0, 255, right - left).round().astype(np.intp)
    band[top : top + BAR_H, left:right] = colour_table(colormap)[steps]
    below = top + BAR_H
    cover = np.zeros((BAR_BAND - below - 3, width), np.uint8)  # the tick labels' rows
    for i, text in enumerate(ticks):
        x = left + round(i * (right - 1 - left) / max(1, len(ticks) - 1))
        if 0 < i < len(ticks) - 1:  # a mark where an inner tick is (the ends are the bar's)
            band[below : below + 3, x] = TEXT
        length = _length(text, _TICK_FONT)
        at = x if i == 0 else x + 1 - length if i == len(ticks) - 1 else x - length / 2
        _text(cover, at, -_TICK_TOP, text, _TICK_FONT)
    band[below + 3 :] = _painted(cover, True)
    return band


def _frames(t: torch.Tensor, clip_dims: int) -> list[torch.Tensor]:
    """One input (``t.dim() < clip_dims``) or a clip's frames along dimension ``clip_dims - 3``."""
    return list(t.unbind(clip_dims - 3)) if t.dim() == clip_dims else [t]


# The pictures of maps and images take one input ``[3, H, W]`` / ``[H, W]``, or a clip ``[3, T, H, W]`` / ``[T, H, W]``,
# which they show as its frames in rows (strip_shape), time left to right and then down. Maps come as positions
# ``where`` in [0, 1] along the colour map (the caller scales them: 0 .. max, or -max .. +max for a signed map), with
# the ``ticks`` that label the colour bar.


def _overlay(rgb: torch.Tensor, where: torch.Tensor, colormap: str, opacity: float, blend: str, signed: bool):
    """The map ``where [*S]`` (positions in [0, 1] along ``colormap``) laid over ``rgb [3, *S]`` in [0, 1] as
    ``blend`` says (:data:`BLENDS`; ``signed``: the magnitude of position ``p`` is ``|2p - 1|``, else ``p``), as
    floats ``[3, *S]`` in [0, 1]."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    rgb = rgb.detach().float().clamp(0, 1).cpu()
    where = where.detach().float().cpu()
    coloured = torch.from_numpy(_coloured(where, colormap)).movedim(-1, 0).float() / 255
    if blend == "even":
        return (1 - opacity) * rgb + opacity * coloured
    grey = (torch.tensor([0.299, 0.587, 0.114]).view(3, *[1] * where.dim()) * rgb).sum(0, keepdim=True)
    magnitude = ((2 * where - 1).abs() if signed else where).clamp(0, 1)
    alpha = opacity * magnitude**MAGNITUDE_GAMMA
    return (1 - alpha) * grey + alpha * coloured


def overlay_frames(
    rgb: torch.Tensor, where: torch.Tensor, alpha: float = 0.5, colormap: str = "jet", *, blend: str = "even",
    signed: bool = False,
) -> torch.Tensor:  # fmt: skip
    """A clip ``[3, T, H, W]`` in [0, 1] with its maps ``[T, H, W]`` laid over it as in :func:`attribution_pngs`
    (``alpha``: the opacity), as frames ``[T, 3, H, W]`` in [0, 1] (for animations)."""
    return _overlay(rgb, where, colormap, alpha, blend, signed).transpose(0, 1)


def _with_bar(body: np.ndarray, title: str, colormap: str, ticks: Sequence[str]) -> bytes:
    return _png(np.concatenate([_titled(body, title), _colour_bar(colormap, ticks, body.shape[1])], axis=0))


def attribution_pngs(
    rgb: torch.Tensor, where: torch.Tensor, *, title: str, ticks: Sequence[str], colormap: str = "jet",
    opacity: float = 0.5, blend: str = "even", signed: bool = False,
) -> tuple[bytes, bytes]:  # fmt: skip
    """The two pictures of a map ``[H, W]`` of positions in [0, 1] along ``colormap`` over its input ``[3, H, W]``
    in [0, 1], each under ``title`` and over the colour bar with ``ticks``: the input beside the map laid over it
    (``blend`` and ``opacity``: see :data:`BLENDS`; ``signed``: the map's 0 is position 0.5), and the map alone.
    A clip ``[3, T, H, W]`` with maps ``[T, H, W]``: its frames in rows (:func:`strip_shape`), each row of inputs
    above its row of overlays."""
    rgb = rgb.detach().clamp(0, 1).cpu()
    where = where.detach().cpu()
    mixed = _overlay(rgb, where, colormap, opacity, blend, signed)
    images, overlays = _frames(rgb, 4), _frames(mixed, 4)
    maps = [_coloured(m, colormap) for m in _frames(where, 3)]
    if len(images) == 1:
        body = _side_by_side([_enlarge(_to_uint8(images[0])), _enlarge(_to_uint8(overlays[0]))], GAP)
    else:
        pairs = zip(_rows([_to_uint8(f) for f in images]), _rows([_to_uint8(f) for f in overlays]), strict=True)
        body = _stacked([_stacked(list(pair)) for pair in pairs], GAP)
    title = _clip_title(title, len(images), *where.shape[-2:])
    return _with_bar(body, title, colormap, ticks), _with_bar(_strip(maps), title, colormap, ticks)


def map_png(where: torch.Tensor, *, title: str, ticks: Sequence[str], colormap: str = "jet") -> bytes:
    """A map ``[H, W]`` (or ``[T, H, W]``, a clip's frames in rows) of positions in [0, 1] in the colour map, under
    ``title``, over the colour bar with ``ticks``."""
    frames = _frames(where.detach().cpu(), 3)
    title = _clip_title(title, len(frames), *where.shape[-2:])
    return _with_bar(_strip([_coloured(f, colormap) for f in frames]), title, colormap, ticks)


def rgb_png(rgb: torch.Tensor, title: str | None = None) -> bytes:
    """An image ``[3, H, W]`` (or clip ``[3, T, H, W]``) scaled min..max to [0, 1] (for deconvnet projections),
    under ``title`` if one is given."""
    lo, hi = rgb.min(), rgb.max()
    scaled = ((rgb - lo) / (hi - lo) if hi > lo else torch.zeros_like(rgb)).cpu()
    frames = _frames(scaled, 4)
    return _png(_titled(_strip([_to_uint8(f) for f in frames]), _clip_title(title, len(frames), *rgb.shape[-2:])))


def image_png(rgb: torch.Tensor, title: str | None = None) -> bytes:
    """An image ``[3, H, W]`` (or clip ``[3, T, H, W]``) in [0, 1] as it is (colours kept), enlarged for display
    like the other pictures, under ``title`` if one is given."""
    frames = _frames(rgb.detach().cpu(), 4)
    return _png(_titled(_strip([_to_uint8(f) for f in frames]), _clip_title(title, len(frames), *rgb.shape[-2:])))


def preview_png(images: torch.Tensor, side: int = 64) -> bytes:
    """A small strip of images ``[K, 3, H, W]`` in [0, 1], each ``side`` px, for progress messages."""
    small = F.interpolate(images.detach().float().cpu(), size=(side, side), mode="area")
    return _png(_to_uint8(make_grid(small, nrow=len(small), padding=1, pad_value=BACKGROUND)))
