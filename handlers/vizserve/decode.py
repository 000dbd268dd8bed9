"""Bytes in, pixels out: images through Pillow, arrays through NumPy's .npy header, JSON bodies through a depth check,
each checked before it is read, so that no small request can hold a worker for long or make it allocate much.

Every failure is a :class:`cnnviz.VizError` that says what came and what is allowed.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviz import InputTooLarge, InvalidInput

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_JPEG_SCANS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_ITEMS",
    "MAX_NPY_HEADER",
    "NPY_MAGIC",
    "check_structure",
    "npy_shape",
    "open_image",
    "echo",
    "fit_for_transform",
    "json_depth",
    "parse_json",
    "read_image",
    "read_npy",
]

NPY_MAGIC = b"\x93NUMPY"
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

# Caps on the structure of an image, checked on the raw bytes before Pillow parses anything. Measured (Pillow 13,
# libjpeg-turbo): Pillow writes 10 scans for a progressive colour JPEG, 6 for greyscale, 18 for CMYK; each extra
# scan of a 49-megapixel JPEG costs up to 30 ms to decode, and each marker, PNG chunk or GIF block that Pillow
# reads in Python 1-5 us, so floods of them in a 32 MiB request would hold a worker for 5 to 15 s.
MAX_IMAGE_SIDE = 65_535  # JPEG's and GIF's own limit; Pillow needs 570 MB for a 1 x 50,000,000 image's rows
MAX_JPEG_SCANS = 64
MAX_JPEG_SEGMENTS = 2_000  # markers with their segments (APPn, DQT, DHT, SOS, ...), not restart markers
MAX_PNG_CHUNKS = 20_000  # libpng writes 8 KiB IDAT chunks: 4,096 of them for the largest request (32 MiB)
MAX_GIF_BLOCKS = 10_000  # extension sub-blocks before the first image
MAX_NPY_HEADER = 10_000  # NumPy's own max_header_size; np.save writes 128 bytes for a [3, H, W] float32 array
MAX_JSON_DEPTH = 64
# Values (commas and colons, strings' own included) in a JSON body. A request has a few dozen; 31 MB of "[0,0,...]"
# made Python's json hold 258 MB (8 s, and the worker kept 177 MB of it).
MAX_JSON_ITEMS = 10_000
# A JPEG is decoded at a reduced size (libjpeg's DCT scaling, 1/2 to 1/8) only down to this many times the resize's
# short side. The transform's output then differs from full decoding, on a noisy textured 3 and 12 MP photo, by
# 0.009-0.012 mean and 0.10 max (normalized units; 0.0015 mean on a smooth one); at 1x it would be 0.019 and 0.26.
_DRAFT_MARGIN = 2
# Resize + centre crop are done on the kept window only when the full resize would make this many times more pixels.
_FIT_RATIO = 4

_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # FF then a marker code: not stuffing, RSTn or fill
_JPEG_NO_LENGTH = {0x01, 0xD8, 0xD9}  # TEM, SOI, EOI: markers without a segment
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def echo(value: Any, limit: int = 60) -> str:
    """``repr`` of user text for an error message, cut to ``limit`` characters: the message names what came without
    echoing a whole hostile input. ``echo("x" * 5000)`` -> ``'xxx...xx'... (5,000 characters)``."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit + 1]).decode("latin-1")
        size = len(value)
    else:
        text = str(value)
        size = len(text)
    if size <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({size:,} {'bytes' if isinstance(value, (bytes, bytearray)) else 'characters'})"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# -- structure checks before decoding ------------------------------------------------------------------------------


def check_structure(data: bytes) -> None:
    """Refuse an image whose container would make Pillow or its codecs work far more than its pixels need: a JPEG
    with more than :data:`MAX_JPEG_SCANS` scans or :data:`MAX_JPEG_SEGMENTS` segments, a PNG with more than
    :data:`MAX_PNG_CHUNKS` chunks, a GIF with more than :data:`MAX_GIF_BLOCKS` extension blocks before its first
    image. Cost: a linear scan in C (JPEG) or one step per chunk or block up to the cap. Raises InvalidInput (400);
    anything else (other formats, broken files) is left to Pillow."""
    if data[:2] == b"\xff\xd8":
        _check_jpeg(data)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        _check_gif(data)


def jpeg_structure(data: bytes) -> tuple[int, int]:
    """``(scans, segments)`` of the first image of a JPEG, counted the way libjpeg reads it: markers are found by
    skipping entropy-coded data and any garbage between segments; a segment is skipped by its length. Stops at EOI,
    or past the caps (then the counts are one above the cap)."""
    pos, scans, segments = 2, 0, 0
    while True:
        m = _JPEG_MARKER.search(data, pos)
        if m is None:
            break
        code = data[m.end() - 1]
        if code == 0xD9:
            break
        segments += 1
        if code == 0xDA:
            scans += 1
        if scans > MAX_JPEG_SCANS or segments > MAX_JPEG_SEGMENTS:
            break
        pos = m.end() if code in _JPEG_NO_LENGTH else m.end() + int.from_bytes(data[m.end() : m.end() + 2], "big")
    return scans, segments


def _check_jpeg(data: bytes) -> None:
    scans, segments = jpeg_structure(data)
    if scans > MAX_JPEG_SCANS:
        raise InvalidInput(
            f"JPEG has more than {MAX_JPEG_SCANS} scans; this server decodes at most {MAX_JPEG_SCANS} (a progressive "
            f"JPEG from a camera or an encoder has 10 to 20). Save it again as a baseline or standard progressive JPEG."
        )
    if segments > MAX_JPEG_SEGMENTS:
        raise InvalidInput(
            f"JPEG has more than {MAX_JPEG_SEGMENTS:,} marker segments; this server reads at most "
            f"{MAX_JPEG_SEGMENTS:,}. Save it again without the extra metadata."
        )


def _check_png(data: bytes) -> None:
    pos, chunks = 8, 0
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidInput(
                f"PNG has more than {MAX_PNG_CHUNKS:,} chunks; this server reads at most {MAX_PNG_CHUNKS:,}. "
                f"Save it again (libpng writes about 4,000 for a 32 MiB PNG)."
            )
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")


def _check_gif(data: bytes) -> None:
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, global colour table
    blocks = 0
    while pos < len(data) and data[pos] == 0x21:  # extensions before the first image descriptor (0x2C)
        pos += 2
        while True:  # the extension, then each of its sub-blocks; a zero length ends it
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise InvalidInput(
                    f"GIF has more than {MAX_GIF_BLOCKS:,} extension blocks before its first image; this server "
                    f"reads at most {MAX_GIF_BLOCKS:,}. Save it again without the extra metadata."
                )
            if pos >= len(data) or not data[pos]:
                break
            pos += data[pos] + 1
        pos += 1


# -- images --------------------------------------------------------------------------------------------------------


def open_image(data: bytes, *, max_pixels: int, max_side: int = MAX_IMAGE_SIDE) -> Image.Image:
    """The image in ``data`` opened, not decoded: its container checked (:func:`check_structure`) and its size from
    the header within ``max_pixels`` and ``max_side`` (413), or a 400 that says what it is not. What
    :func:`read_image` decodes, and what the cost model reads before any pixel is decoded."""
    check_structure(data)
    too_many = "image is {} pixels; this server takes at most {:,} (max_image_pixels). Downscale it first."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides, below
            Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses at open only past twice this
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise InputTooLarge(too_many.format(f"{int(m.group(1)):,}" if m else "too many", max_pixels)) from exc
    except UnidentifiedImageError as exc:
        head = bytes(data[:8])
        raise InvalidInput(
            f"field 'data' is not an image Pillow can read (first bytes {head!r}); send JPEG, PNG, GIF, WebP, BMP, "
            f"TIFF or a .npy float32 array [3, H, W]"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"cannot decode the image in field 'data': {_clip(str(exc))}") from exc
    width, height = im.size
    if width < 1 or height < 1:
        raise InvalidInput(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputTooLarge(too_many.format(f"{width}x{height} = {width * height:,}", max_pixels))
    if max(width, height) > max_side:
        raise InputTooLarge(
            f"image is {width:,}x{height:,} pixels; each side may be at most {max_side:,} px. Crop or downscale it."
        )
    return im


def read_image(
    data: bytes,
    *,
    max_pixels: int,
    resize: int | None = None,
    crop: int | tuple[int, int] | None = None,
    resample: int = Image.Resampling.BILINEAR,
    max_side: int = MAX_IMAGE_SIDE,
) -> Image.Image:
    """Decode ``data`` into an RGB image, as a person would see it.

    The container is checked first (:func:`check_structure`), then the size from the header, before pixels are
    decoded: more than ``max_pixels``, or a side longer than ``max_side``, is refused with 413. EXIF orientation
    is applied. Animated images give their first frame. Any mode Pillow reads becomes RGB: transparency is
    composited over white, 16-bit and float greyscale are scaled to 8 bits from their full range, CMYK and palette
    images are converted.

    With ``resize`` (the short side R of a ``Resize(R)`` transform) and ``crop`` (its ``CenterCrop``, an int or
    ``(h, w)``), the image is only as large as that transform needs: a JPEG is decoded at a reduced size (down to
    twice R on its short side), and an image whose full resize would be far larger than the crop goes through
    :func:`fit_for_transform`. Pass the result to the same transform as before; its output stays within the
    tolerance stated there. Without ``resize`` the full image is returned, as before.
    """
    im = open_image(data, max_pixels=max_pixels, max_side=max_side)
    width, height = im.size
    try:
        im.seek(0)
        if resize and im.format == "JPEG":
            short = min(width, height)
            want = _DRAFT_MARGIN * resize
            im.draft(None, (math.ceil(width * want / short), math.ceil(height * want / short)))
        im.load()
        im = ImageOps.exif_transpose(im) or im
        im = _to_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"cannot decode the {im.format or 'image'} in field 'data': {_clip(str(exc))}") from exc
    if resize:
        im = fit_for_transform(im, resize, crop if crop is not None else resize, resample=resample)
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_DEPTH_MODES:
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) <= 65535) else None
        lo = 0.0 if top is not None else a.min(initial=0)
        span = (top if top is not None else a.max(initial=0)) - lo
        a = np.zeros_like(a) if span <= 0 else (a - lo) / span
        return Image.fromarray(np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """``(w, h)`` that torchvision's ``Resize(short)`` gives (its ``_compute_resized_output_size``)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def fit_for_transform(
    im: Image.Image, resize: int, crop: int | tuple[int, int], *, resample: int = Image.Resampling.BILINEAR
) -> Image.Image:
    """``im`` reduced to what ``Resize(resize)`` + ``CenterCrop(crop)`` keep, so that extreme shapes cost no more
    than a normal photo (a 1 x 65535 image would otherwise be resized to 256 x 16,776,960 first: 17 GB).

    When the full resize would make more than 4 times the pixels of the window the transform keeps, this returns
    that window already resized: short side ``resize`` (so torchvision's Resize leaves it alone) by
    ``max(resize, crop)`` along the long side, cut so that CenterCrop takes the same pixels. Pillow resizes only
    the ``box`` of the source that the window covers, with the same scale as the full resize, reading the
    filter's support from outside the box, so no margin is needed and the work is bounded by the window's size.
    Otherwise ``im`` comes back unchanged. ``crop`` is an int or ``(h, w)``; ``resample`` must be the transform's
    own filter (torchvision's default is bilinear). Measured: the transform's output equals the plain pipeline's
    within 1/255 on every pixel (random images, 1 x 1 to 3000 x 3000).
    """
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    width, height = im.size
    out_w, out_h = _resized_size(width, height, resize)
    keep_w = out_w if out_w == resize else min(out_w, max(resize, crop_w))
    keep_h = out_h if out_h == resize else min(out_h, max(resize, crop_h))
    if out_w * out_h <= _FIT_RATIO * keep_w * keep_h:
        return im

    def start(full: int, keep: int, cut: int) -> int:
        # where the kept window starts in the full resize, so that CenterCrop's offset in it (torchvision rounds
        # (size - crop) / 2) falls on the full resize's own crop offset
        if keep == full:
            return 0
        return int(round((full - cut) / 2.0)) - int(round((keep - cut) / 2.0))

    x0, y0 = start(out_w, keep_w, crop_w), start(out_h, keep_h, crop_h)
    sx, sy = width / out_w, height / out_h
    box = (x0 * sx, y0 * sy, (x0 + keep_w) * sx, (y0 + keep_h) * sy)
    return im.resize((keep_w, keep_h), resample, box=box)


# -- arrays --------------------------------------------------------------------------------------------------------

_NPY_EXPECTED = "expected a float32 array [3, H, W] as np.save writes it (descr '<f4')"
_NPY_EXPECTED_CLIP = "expected a float32 array [3, T, H, W] as np.save writes it (descr '<f4')"


def npy_shape(
    data: bytes, *, min_side: int, max_side: int, rank: int = 3, max_frames: int | None = None
) -> tuple[list[int], bool, int]:
    """The checks of :func:`read_npy`, on the header alone (nothing is allocated): ``(shape, Fortran order, where
    the data starts)``, or the error the array gets. What the cost model reads before an array is read."""
    if rank not in (3, 4):
        raise ValueError(f"rank is 3 ([3, H, W]) or 4 ([3, T, H, W]), got {rank}")
    expected = _NPY_EXPECTED if rank == 3 else _NPY_EXPECTED_CLIP
    layout = "[3, H, W]" if rank == 3 else "[3, T, H, W]"
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
    except ValueError as exc:
        raise InvalidInput(f"field 'data' starts like .npy but is not one: {_clip(str(exc))}; {expected}") from exc
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise InvalidInput(f".npy format version {version[0]}.{version[1]}; expected 1.0, 2.0 or 3.0 ({expected})")
    length_bytes = buf.read(2 if version == (1, 0) else 4)
    header_len = int.from_bytes(length_bytes, "little")
    if header_len > MAX_NPY_HEADER:
        raise InvalidInput(
            f".npy header is {header_len:,} bytes; this server reads headers of at most {MAX_NPY_HEADER:,} "
            f"(np.save writes 128 for a float32 {layout} array)"
        )
    buf.seek(8)  # back to the header length: NumPy's reader takes it from there
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy's note about headers written by Python 2
            shape, fortran, dtype = read_header(buf, max_header_size=MAX_NPY_HEADER)
    except Exception as exc:  # NumPy raises ValueError, and more for hostile descrs: all the sender's doing
        raise InvalidInput(f".npy header cannot be read: {_clip(str(exc))}; {expected}") from exc
    if dtype.fields is not None:
        what = f"a structured dtype with fields {echo(', '.join(dtype.names or ()))}"
    elif dtype.subdtype is not None:
        what = f"a subarray dtype {dtype.subdtype[0].str} x {list(dtype.subdtype[1])}"
    elif dtype.hasobject:
        what = "dtype object (Python objects: never unpickled here)"
    elif dtype != np.dtype("<f4"):
        what = f"dtype {dtype.str}"
    else:
        what = ""
    if what:
        raise InvalidInput(f".npy array has {what}; expected float32 ('<f4'): use a.astype(np.float32)")
    dims = _clip(str(list(shape)), 80)
    if len(shape) != rank or shape[0] != 3:
        kind = "normalized RGB" if rank == 3 else "normalized RGB frames, channels first"
        raise InvalidInput(f".npy array has shape {dims}; expected {layout} ({kind})")
    sizes = [int(s) for s in shape]
    if min(sizes) < 0:
        raise InvalidInput(f".npy array has shape {dims}, with a negative side; expected {layout}")
    h, w = sizes[-2:]
    bounds = f"H and W must be within {min_side}..{max_side} for this model (max_input_side)"
    if max(h, w) > max_side:
        raise InputTooLarge(f".npy array is {sizes}; {bounds}")
    if min(h, w) < min_side:
        raise InvalidInput(f".npy array is {sizes}; {bounds}")
    if rank == 4:
        frames = sizes[1]
        if max_frames is not None and frames > max_frames:
            raise InputTooLarge(f".npy clip is {sizes}: {frames:,} frames; this server takes at most {max_frames}")
        if frames < 1:
            raise InvalidInput(f".npy clip is {sizes}: it has no frames; expected {layout} with T >= 1")
    start = buf.tell()
    need = math.prod(sizes) * 4
    if len(data) - start != need:
        raise InvalidInput(f".npy array {sizes} needs {need} bytes of data, got {len(data) - start}")
    return sizes, fortran, start


def read_npy(
    data: bytes, *, min_side: int, max_side: int, rank: int = 3, max_frames: int | None = None
) -> torch.Tensor:
    """A normalized input array from ``.npy`` bytes, used exactly as given: float32 ``[3, H, W]``, or with
    ``rank=4`` a video clip ``[3, T, H, W]`` of 1 to ``max_frames`` frames (None: no cap).

    The header is parsed first, and only when it is at most :data:`MAX_NPY_HEADER` bytes (NumPy's parser, with its
    own cap), so a huge header or one that claims a huge shape is refused before anything is allocated
    (:func:`npy_shape`). Every bad descr, dtype (structured, subarray, object, not float32) or shape (not integers,
    negative, not ``[3, H, W]`` or ``[3, T, H, W]``) is a 400 that names it; H or W past ``max_side``, or T past
    ``max_frames``, is a 413. No pickles are read. Values must be finite.
    """
    sizes, fortran, start = npy_shape(data, min_side=min_side, max_side=max_side, rank=rank, max_frames=max_frames)
    arr = np.frombuffer(data, dtype="<f4", offset=start).reshape(sizes, order="F" if fortran else "C")
    if not np.isfinite(arr).all():
        raise InvalidInput(".npy array holds NaN or infinity; every value must be finite")
    return torch.from_numpy(np.ascontiguousarray(arr).copy())


# -- JSON ----------------------------------------------------------------------------------------------------------


def json_depth(raw: bytes, stop: int | None = None) -> int:
    """How deep ``[`` and ``{`` nest in ``raw`` outside strings (0 for a scalar), in linear time and bounded memory
    (strings are blanked with one regular expression, brackets counted in 1 MiB steps). With ``stop``, it may
    return as soon as the depth exceeds ``stop``. Brackets in an unterminated string count (the JSON is broken
    anyway)."""
    if raw.count(b"[") + raw.count(b"{") <= (stop if stop is not None else -1):
        return raw.count(b"[") + raw.count(b"{")  # an upper bound is enough: within the limit
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    step = 1 << 20
    for at in range(0, len(brackets), step):
        chunk = np.frombuffer(brackets, np.uint8, count=min(step, len(brackets) - at), offset=at)
        moves = np.where((chunk == ord("[")) | (chunk == ord("{")), np.int32(1), np.int32(-1))
        levels = np.cumsum(moves, dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
        if stop is not None and deepest > stop:
            break
    return deepest


def parse_json(
    raw: bytes | bytearray | str, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS
) -> Any:
    """``json.loads(raw)``, except that a body that would cost far more than a request is refused before parsing:
    nesting deeper than ``max_depth`` (default 64; a request needs 2), or more than ``max_items`` commas and colons
    (default 10,000; counted in strings too, where a request has a handful). Every failure, RecursionError
    included, is an InvalidInput (400) instead of an exception that would become a 500. Costs a few passes over
    the bytes in C; a 30 MB base64 image parses as before."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    # every string blanked below is next to a comma or colon in valid JSON; more quotes than that is not a request
    if data.count(b",") + data.count(b":") > max_items or data.count(b'"') > 4 * max_items + 4:
        raise InvalidInput(
            f"request body is JSON with more than {max_items:,} values; this server parses at most {max_items:,} "
            f"(a request has a few dozen)"
        )
    depth = json_depth(data, stop=max_depth)
    if depth > max_depth:
        raise InvalidInput(
            f"request body is JSON nested more than {max_depth} levels deep; this server parses at most "
            f"{max_depth} (a request needs 2)"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidInput(f"request body looks like JSON but does not parse: {_clip(str(exc))}") from exc
