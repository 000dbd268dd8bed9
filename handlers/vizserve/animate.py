"""Frames to animations (animated WebP, APNG, GIF, MP4) and to a static strip, for video inputs and maps over time.

WebP (lossless) is the default: heatmaps keep their colours exactly, where GIF's 256 colours band them. WebP, APNG
and GIF come from Pillow, MP4 (H.264) from PyAV's FFmpeg. Frames are enlarged by a whole factor like the other
pictures (:data:`vizserve.render.MIN_PICTURE`).
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import torch
from PIL import Image

from cnnviz import InvalidOption

from . import render

__all__ = ["ANIMATION_FORMATS", "animation", "h264_encoder", "strip_png"]

#: ``format`` -> content type.
ANIMATION_FORMATS = {"webp": "image/webp", "apng": "image/apng", "gif": "image/gif", "mp4": "video/mp4"}
MAX_FPS = 60.0
_H264_ENCODERS = ("libx264", "libopenh264")  # PyAV's wheels carry libx264; a system FFmpeg may have either


def h264_encoder() -> str | None:
    """The name of an H.264 encoder in PyAV's FFmpeg, or None when it has none (or PyAV is missing)."""
    try:
        import av
    except ImportError:
        return None
    return next((name for name in _H264_ENCODERS if name in av.codecs_available), None)


def _frames_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[T, 3, H, W]`` floats in [0, 1] -> ``[T, H', W', 3]`` uint8, enlarged by a whole factor until the short side
    is at least MIN_PICTURE (as :func:`vizserve.render._enlarge` does for single pictures)."""
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, 3, H, W] with T >= 1, got {list(frames.shape)}")
    a = (frames.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    k = max(1, math.ceil(render.MIN_PICTURE / min(a.shape[1:3])))
    return a.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else a


def animation(frames: torch.Tensor, fmt: str = "webp", fps: float = 8) -> tuple[bytes, str]:
    """``frames`` ``[T, 3, H, W]`` floats in [0, 1] as one animation: ``(bytes, content type)``.

    ``fmt``: ``webp`` (default; animated, lossless), ``apng``, ``gif`` (256 colours per frame: heatmaps band) or
    ``mp4`` (H.264, yuv420p, lossy; needs an H.264 encoder in PyAV's FFmpeg, see :func:`h264_encoder`). ``fps``:
    frames per second, 0 < fps <= 60 (default 8). WebP, APNG and GIF loop forever; an MP4 has no loop flag (a page
    plays it with ``<video loop>``). Frames smaller than 224 px are enlarged by a whole factor (nearest), MP4's
    then padded to even sides by repeating the last row or column. Raises InvalidOption for another ``fmt``, a
    ``fps`` out of range, or ``mp4`` without an encoder.
    """
    if fmt not in ANIMATION_FORMATS:
        raise InvalidOption(f"format={fmt!r} is not an animation format; use one of {', '.join(ANIMATION_FORMATS)}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise InvalidOption(f"fps must be within 0 .. {MAX_FPS:g} (above 0), got {fps!r}")
    a = _frames_uint8(frames)
    if fmt == "mp4":
        return _mp4(a, fps), ANIMATION_FORMATS[fmt]
    images = [Image.fromarray(f, "RGB") for f in a]
    ms = max(1, round(1000 / fps))
    buf = io.BytesIO()
    if fmt == "webp":
        # method 0 and quality 0 are libwebp's fastest lossless effort: still exact, 10-20% larger than its best
        images[0].save(
            buf, "WEBP", save_all=True, append_images=images[1:], duration=ms, loop=0, lossless=True, method=0,
            quality=0, exact=True,
        )  # fmt: skip
    elif fmt == "apng":
        images[0].save(
            buf, "PNG", save_all=True, append_images=images[1:], duration=ms, loop=0, compress_level=1,
            default_image=False,
        )  # fmt: skip
    else:
        # GIF's delays are whole 1/100 s (Pillow rounds); each frame has its own palette (_paletted)
        paletted = [_paletted(f) for f in a]
        paletted[0].save(buf, "GIF", save_all=True, append_images=paletted[1:], duration=ms, loop=0, optimize=False)
    return buf.getvalue(), ANIMATION_FORMATS[fmt]


def _paletted(frame: np.ndarray) -> Image.Image:
    """An ``H x W x 3`` uint8 frame as a palette image: exact when it has at most 256 colours (a heatmap in the jet
    map), else Pillow's fast octree, undithered: 15x faster than its default median cut, with a mean error of 2.5
    levels against 1.4 on a photo."""
    packed = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
    colours, index = np.unique(packed.ravel(), return_inverse=True)
    if len(colours) > 256:
        return Image.fromarray(frame, "RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    im = Image.fromarray(index.reshape(frame.shape[:2]).astype(np.uint8), "P")
    palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
    im.putpalette(palette.tobytes())
    return im


def _mp4(a: np.ndarray, fps: float) -> bytes:
    encoder = h264_encoder()
    if encoder is None:
        raise InvalidOption(
            "format=mp4 needs an H.264 encoder (libx264 or libopenh264) in PyAV's FFmpeg, and this server's has "
            "none (is PyAV installed from its wheel, av in requirements.txt?); use format=webp, apng or gif"
        )
    import av

    _, h, w, _ = a.shape
    if h % 2 or w % 2:  # yuv420p halves the chroma planes: both sides must be even
        a = np.pad(a, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:  # no faststart: it rereads the output, which BytesIO cannot
        stream = out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = a.shape[2], a.shape[1], "yuv420p"
        if encoder == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}  # visually near-lossless, fast
        for frame in a:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def strip_png(frames: torch.Tensor, labels: list[str] | None = None, title: str = "") -> bytes:
    """A static strip of ``frames`` ``[T, 3, H, W]`` (or ``[T, 1, H, W]``) floats in [0, 1] as one PNG, laid out
    like :func:`vizserve.render.grid_png`: each frame under its label (default its index), small frames enlarged
    and large ones reduced, a title on top; left to right, wrapped into rows as a clip's pictures are (at most
    ``render.STRIP_COLUMNS`` frames and about ``render.MAX_STRIP`` px a row, evened out over the rows)."""
    if frames.ndim != 4 or frames.shape[1] not in (1, 3) or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, 1 or 3, H, W] with T >= 1, got {list(frames.shape)}")
    labels = labels if labels is not None else [str(k) for k in range(len(frames))]
    if len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} frames")
    tile = max(render.MIN_TILE, min(render.MAX_TILE, max(frames.shape[-2:])))  # a tile's side after grid_png's _fit
    fit = max(1, (render.MAX_STRIP + render.PAD) // (tile + render.PAD))
    rows = math.ceil(len(frames) / min(len(frames), render.STRIP_COLUMNS, fit))
    nrow = math.ceil(len(frames) / rows)
    return render.grid_png(frames.detach().float().cpu().clamp(0, 1), labels, title, nrow=nrow)
