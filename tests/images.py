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


def raw_array(text: str) -> np.ndarray:
    """A response's ``raw`` field (base64 of a .npy file) as the array it carries."""
    import base64

    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


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


# -- hostile inputs (docs/security.md): each is small on the wire and costly if decoded naively -------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def flat_png(width: int, height: int) -> bytes:
    """A black RGB PNG of any size, made without holding its pixels: 1 x 50,000,000 is 200 kB, in 0.1 s."""
    import struct
    import zlib

    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    step = max(1, (1 << 20) // len(row))  # rows per repeated block
    reps, rest = divmod(height, step)
    comp = zlib.compressobj(9)
    # After a full flush deflate starts afresh, so the same input compresses to the same bytes: write one block
    # and repeat it, with the checksum worked out for the whole stream.
    head = comp.compress(b"") + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(row * step) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(row * rest) + comp.flush()
    check = 1
    for _ in range(reps):
        check = zlib.adler32(row * step, check)
    check = zlib.adler32(row * rest, check)
    stream = head + block * reps + tail[:-4] + struct.pack(">I", check)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = _png_chunk(b"IDAT", stream)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")


def png_chunk_flood(chunks: int, size: int = 16) -> bytes:
    """A 16 x 16 PNG with ``chunks`` empty private chunks before its image data (Pillow reads each in Python)."""
    data = encode(photo(size, size), "PNG")
    at = data.index(b"IDAT") - 4
    return data[:at] + _png_chunk(b"zzZz", b"") * chunks + data[at:]


def jpeg_segment_flood(segments: int) -> bytes:
    """A small JPEG with ``segments`` empty comment segments after SOI."""
    data = jpeg(32, 32)
    return data[:2] + b"\xff\xfe\x00\x02" * segments + data[2:]


def gif_block_flood(blocks: int) -> bytes:
    """An 8 x 8 GIF with ``blocks`` one-byte comment sub-blocks before its image."""
    data = encode(Image.new("P", (8, 8), 0), "GIF")
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    return data[:at] + b"\x21\xfe" + b"\x01a" * blocks + b"\x00" + data[at:]


def jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each scan of a JPEG (its SOS marker through its entropy-coded data), and nothing else."""
    import re

    marker = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
    spans: list[tuple[int, int]] = []
    pos, open_at = 2, None
    while (m := marker.search(data, pos)) is not None:
        code = data[m.end() - 1]
        if open_at is not None:
            spans.append((open_at, m.start()))
            open_at = None
        if code == 0xD9:
            break
        if code == 0xDA:
            open_at = m.start()
        pos = m.end() if code in (0x01, 0xD8) else m.end() + int.from_bytes(data[m.end() : m.end() + 2], "big")
    return spans


def many_scans_jpeg(scans: int, width: int = 256, height: int = 256) -> bytes:
    """A progressive JPEG whose smallest scan is repeated until it has ``scans`` scans in all. libjpeg decodes
    every one (with a warning): the cost of decoding grows with the number of scans, the file hardly at all."""
    data = encode(photo(width, height), "JPEG", progressive=True, quality=90)
    spans = jpeg_scans(data)
    start, end = min(spans, key=lambda s: s[1] - s[0])
    last = spans[-1][1]
    return data[:last] + data[start:end] * (scans - len(spans)) + data[last:]


def npy_with_header(header: str, payload: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file with any header text (padded as np.save pads it) and any payload after it."""
    import struct

    size = 2 if version == (1, 0) else 4
    text = header.encode("latin-1")
    pad = -(6 + 2 + size + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H" if size == 2 else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + payload


def deep_json(depth: int, inner: str = "1") -> bytes:
    """``{"mode": [[[...1...]]]}`` with ``depth`` levels in all."""
    return b'{"mode": ' + b"[" * (depth - 1) + inner.encode() + b"]" * (depth - 1) + b"}"


def textured_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture with detail at several scales (gradients, a disc, and noise at 1, 3 and 9 px), so
    that reduced-size JPEG decoding has something to lose."""
    rng = np.random.default_rng(seed)
    base = np.asarray(photo(width, height, seed), dtype=np.float32).copy()
    for s in (1, 3, 9):
        noise = rng.normal(0, 10, (height // s + 1, width // s + 1, 3)).astype(np.float32)
        base += noise.repeat(s, axis=0).repeat(s, axis=1)[:height, :width]
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
