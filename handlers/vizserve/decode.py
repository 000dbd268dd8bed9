"""Bytes in, pixels out: images through Pillow, arrays through NumPy's .npy header, each checked before it is read.

Every failure is a :class:`cnnviz.VizError` that says what came and what is allowed.
"""

from __future__ import annotations

import ast
import io
import re
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviz import InputTooLarge, InvalidInput

__all__ = ["NPY_MAGIC", "read_image", "read_npy"]

NPY_MAGIC = b"\x93NUMPY"
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def read_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an RGB image, as a person would see it.

    The size is checked from the header, before pixels are decoded: more than ``max_pixels`` is refused with 413.
    EXIF orientation is applied. Animated images give their first frame. Any mode Pillow reads becomes RGB:
    transparency is composited over white, 16-bit and float greyscale are scaled to 8 bits from their full range,
    CMYK and palette images are converted.
    """
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
        raise InvalidInput(f"cannot decode the image in field 'data': {exc}") from exc
    width, height = im.size
    if width < 1 or height < 1:
        raise InvalidInput(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputTooLarge(too_many.format(f"{width}x{height} = {width * height:,}", max_pixels))
    try:
        im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im) or im
        return _to_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"cannot decode the {im.format or 'image'} in field 'data': {exc}") from exc


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


def read_npy(data: bytes, *, min_side: int, max_side: int) -> torch.Tensor:
    """A normalized input array from ``.npy`` bytes, used exactly as given: float32 ``[3, H, W]``.

    The header is parsed first, so a header that claims a huge shape is refused before anything is allocated.
    No pickles are read. Values must be finite.
    """
    try:
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        header_len = int.from_bytes(buf.read(2 if version == (1, 0) else 4), "little")
        header = ast.literal_eval(buf.read(header_len).decode("latin1"))
        shape, fortran, descr = tuple(header["shape"]), bool(header["fortran_order"]), header["descr"]
    except Exception as exc:
        raise InvalidInput(f"field 'data' starts like .npy but its header cannot be read: {exc}") from exc
    if np.dtype(descr) != np.dtype("<f4"):
        raise InvalidInput(
            f".npy array has dtype {np.dtype(descr).str}; expected float32 ('<f4'): use a.astype(np.float32)"
        )
    if len(shape) != 3 or shape[0] != 3:
        raise InvalidInput(f".npy array has shape {list(shape)}; expected [3, H, W] (normalized RGB)")
    _, h, w = shape
    bounds = f"H and W must be within {min_side}..{max_side} for this model (max_input_side)"
    if max(h, w) > max_side:
        raise InputTooLarge(f".npy array is [3, {h}, {w}]; {bounds}")
    if min(h, w) < min_side:
        raise InvalidInput(f".npy array is [3, {h}, {w}]; {bounds}")
    start = buf.tell()
    need = 3 * h * w * 4
    if len(data) - start != need:
        raise InvalidInput(f".npy array [3, {h}, {w}] needs {need} bytes of data, got {len(data) - start}")
    arr = np.frombuffer(data, dtype="<f4", offset=start).reshape(shape, order="F" if fortran else "C")
    if not np.isfinite(arr).all():
        raise InvalidInput(".npy array holds NaN or infinity; every value must be finite")
    return torch.from_numpy(np.ascontiguousarray(arr).copy())
