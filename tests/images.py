"""Encoded test images and arrays, made in memory."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth colourful RGB picture (gradients plus a disc), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < (0.2 * min(width, height)) ** 2
    rgb = np.stack([x / width, y / height, disc.astype(np.float32)], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=90)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels in its header but carries no pixel data (a cheap 'bomb')."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _shape_image(image) -> Image.Image:
    return Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())


def shape_png(label: int | None = None, seed: int = 21, pool: int = 60) -> tuple[bytes, list[int]]:
    """A generated shape as PNG bytes with its box: the first of ``pool`` drawn with ``seed`` that has class
    ``label`` (any class when ``None``)."""
    from examples.shapes.shapes_data import make_shapes

    images, labels, boxes = make_shapes(pool, seed)
    k = 0 if label is None else int((labels == label).nonzero()[0])
    return encode(_shape_image(images[k]), "PNG"), boxes[k].tolist()


def shape_folder(folder, n: int, seed: int, stem: str = "shape") -> None:
    """``n`` generated shapes saved as ``folder/{stem}{k}.png``."""
    from examples.shapes.shapes_data import make_shapes

    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = make_shapes(n, seed)
    for k in range(n):
        _shape_image(images[k]).save(folder / f"{stem}{k}.png")
