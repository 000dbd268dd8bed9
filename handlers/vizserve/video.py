"""Video in: container sniffing, bounded decoding of a clip with PyAV (animated WebP through Pillow), even sampling
of its frames, and the eval transform of torchvision's video weights.

Every cap is checked from the container's header before frames are decoded (bytes, duration, pixels per frame,
frames to decode, output size), and again while decoding (frames decoded, time, timestamps past the duration cap),
so that no request holds a worker for long or makes it allocate much. Every failure is a :class:`cnnviz.VizError`
that says what was read (container, codec, size, duration) and what is allowed; PyAV's exceptions never escape.
"""

from __future__ import annotations

import io
import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnviz import InputTooLarge, InvalidInput, InvalidOption

from .decode import _clip, _to_rgb

__all__ = [
    "VIDEO_FORMATS", "FrameResizer", "VideoLimits", "is_video", "probe_clip", "read_clip", "sniff_video",
    "video_transform",
]  # fmt: skip

#: What :func:`sniff_video` names, with the FFmpeg demuxer that reads it (None: Pillow reads it).
VIDEO_FORMATS = {
    "MP4": "mov",
    "MOV": "mov",
    "WebM": "matroska",
    "MKV": "matroska",
    "AVI": "avi",
    "GIF": "gif",
    "APNG": "apng",
    "WebP": None,  # FFmpeg 8's webp decoder reads still images only: animated WebP goes through Pillow (libwebp)
}
_ACCEPTED = "MP4, MOV, WebM, MKV, AVI, or an animated GIF, WebP or PNG"
# ISO-BMFF brands of still images (HEIF, AVIF): the same 'ftyp' box as MP4, but not videos.
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_MOV_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"}  # old QuickTime files start without 'ftyp'
_WALK_STEPS = 100_000  # chunks or blocks read while sniffing GIF, APNG and WebP (about 30 ms in Python)


@dataclass(frozen=True)
class VideoLimits:
    """Caps on one video input. Measured on this project's 2-core CPU (shared, PyAV 18.1 with FFmpeg 8): H.264 at
    crf 23 decodes in 0.7 ms a frame at 360p, 2.4 ms at 720p, 4.1 ms at 1080p and 22 ms at 4K; noise at 720p and
    31 Mbit/s (the worst case) in 8.5 ms. So the time cap binds before the frame cap from 1080p up.

    ``max_bytes``: 32 MiB, TorchServe's ``max_request_size``: nothing larger arrives anyway.
    ``max_duration_s``: 10 minutes, from the header (or from the timestamps while decoding, where it has none).
    ``max_decoded_frames``: frames decoded in all, a seek's pre-roll from the keyframe included: 2,000 is 67 s at
    30 fps, 5 s of decoding at 720p.
    ``max_pixels_per_frame``: DCI 4K (4096 x 2160), from the container's header before any frame is decoded, and by
    FFmpeg's own ``max_pixels`` check on every frame it probes or decodes.
    ``max_decode_seconds``: wall time of opening and decoding, checked after every packet and by FFmpeg's interrupt
    callback on each read; 10 s is well within TorchServe's 120 s response timeout, leaving the model its time.
    ``max_frames``: frames in the clip returned (torchvision's video models take 16 to 32).
    ``max_clip_bytes``: the returned uint8 clip, frames x H x W x 3: 16 frames of 4K (425 MB) pass, 64 of 4K
    (1.7 GB) do not.
    """

    max_bytes: int = 32 * 1024 * 1024
    max_duration_s: float = 600.0
    max_decoded_frames: int = 2_000
    max_pixels_per_frame: int = 4096 * 2160
    max_decode_seconds: float = 10.0
    max_frames: int = 64
    max_clip_bytes: int = 512 * 1024 * 1024


# -- sniffing ------------------------------------------------------------------------------------------------------


def sniff_video(data: bytes) -> str | None:
    """The container of ``data`` by its magic bytes, one of :data:`VIDEO_FORMATS`, or None when it is not a video.

    ISO-BMFF ('ftyp', or an old QuickTime file's first atom) is MP4 or MOV (brand 'qt  '), except HEIF/AVIF still
    images; EBML (1A 45 DF A3) is WebM or MKV by its DocType; RIFF is AVI ('AVI ') or WebP ('WEBP' with the
    animation flag in its VP8X chunk and at least two ANMF frames); a GIF needs two images, a PNG an acTL chunk
    before its IDAT that declares at least two frames. A still image is not a video. Costs at most one bounded walk
    over the chunks or blocks."""
    head = bytes(data[:64])
    if len(head) >= 12 and head[4:8] in _MOV_ATOMS:
        brand = head[8:12]
        if head[4:8] == b"ftyp" and brand in _IMAGE_BRANDS:
            return None
        return "MOV" if brand == b"qt  " or head[4:8] != b"ftyp" else "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM" if b"webm" in head else "MKV"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "AVI"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP" if _webp_walk(data, stop=2)[2] >= 2 else None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF" if _gif_images(data, stop=2) >= 2 else None
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "APNG" if _apng_frames(data) >= 2 else None
    return None


def not_a_video(arch: str, data: bytes) -> InvalidInput:
    """The error for an input of a video model that is neither a video nor a .npy clip."""
    return InvalidInput(
        f"{arch} takes a video (MP4, WebM, AVI, MKV, MOV, animated GIF, WebP or PNG) or a .npy float32 clip "
        f"[3, T, H, W]; field 'data' is neither (first bytes {bytes(data[:8])!r})"
    )


def is_video(data: bytes) -> bool:
    """Whether ``data`` is a video container this module reads (see :func:`sniff_video`); a still image is not."""
    return sniff_video(data) is not None


def _gif_images(data: bytes, stop: int) -> int:
    """Image descriptors in a GIF, counted up to ``stop`` by skipping extensions and LZW sub-blocks."""
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, global colour table
    images = steps = 0
    while pos < len(data) and images < stop and steps < _WALK_STEPS:
        kind = data[pos]
        if kind == 0x2C:  # image descriptor, local colour table, LZW minimum code size, then sub-blocks
            images += 1
            local = data[pos + 9] if pos + 9 < len(data) else 0
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        elif kind == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # trailer (0x3B) or garbage
            break
        while pos < len(data) and data[pos]:  # sub-blocks up to the zero-length one
            steps += 1
            pos += data[pos] + 1
        pos += 1
    return images


def _apng_frames(data: bytes) -> int:
    """acTL's frame count when a PNG has acTL before its first IDAT, else 0."""
    pos = 8
    for _ in range(_WALK_STEPS):
        if pos + 8 > len(data):
            break
        kind = data[pos + 4 : pos + 8]
        if kind == b"acTL" and pos + 12 <= len(data):
            return int.from_bytes(data[pos + 8 : pos + 12], "big")
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return 0


def _apng_timing(data: bytes) -> tuple[int, float] | None:
    """``(frames, seconds)`` of an APNG from its fcTL chunks' delays (FFmpeg's header gives neither); None when the
    walk stops first."""
    pos, frames, total = 8, 0, 0.0
    for _ in range(_WALK_STEPS):
        if pos + 8 > len(data):
            return frames, total
        if data[pos + 4 : pos + 8] == b"fcTL" and pos + 8 + 24 <= len(data):
            num = int.from_bytes(data[pos + 28 : pos + 30], "big")
            den = int.from_bytes(data[pos + 30 : pos + 32], "big")
            frames += 1
            total += num / (den or 100)  # the APNG spec: a zero denominator means 1/100 s
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return None


def _webp_walk(data: bytes, stop: int | None = None) -> tuple[int, int, int, list[int]]:
    """``(canvas width, canvas height, frames, frame durations in ms)`` of an animated WebP, from its VP8X and ANMF
    chunks without decoding (``(0, 0, 0, [])`` when it is not one); counting stops at ``stop`` frames."""
    if len(data) < 30 or data[12:16] != b"VP8X" or not data[20] & 0x02:  # the animation flag
        return 0, 0, 0, []
    width = int.from_bytes(data[24:27], "little") + 1
    height = int.from_bytes(data[27:30], "little") + 1
    durations: list[int] = []
    pos = 12
    for _ in range(_WALK_STEPS):
        if pos + 8 > len(data) or (stop is not None and len(durations) >= stop):
            break
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"ANMF" and pos + 23 <= len(data):
            durations.append(int.from_bytes(data[pos + 20 : pos + 23], "little"))
        pos += 8 + size + (size & 1)
    return width, height, len(durations), durations


# -- decoding ------------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """What the header says, for messages and sampling."""

    container: str
    size: int
    codec: str = ""  # known once the container is open
    width: int = 0
    height: int = 0
    fps: float | None = None
    duration: float | None = None  # seconds, from the header; None where it has none

    def describe(self) -> str:
        parts = [self.codec] if self.codec else []
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.duration is not None:
            parts.append(_seconds(self.duration))
        if self.fps:
            parts.append(f"{self.fps:.3g} fps")
        return f"{self.container} ({', '.join([*parts, f'{self.size:,} bytes'])})"


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if abs(value) >= 1000 else f"{value:.3g} s"


class _Budget:
    """Frames decoded and seconds spent, against the limits; raises 413 past either."""

    def __init__(self, limits: VideoLimits, source: _Source) -> None:
        self.limits, self.source = limits, source
        self.deadline = time.perf_counter() + limits.max_decode_seconds
        self.decoded = 0

    def tick(self, frames: int = 0) -> None:
        self.decoded += frames
        if self.decoded > self.limits.max_decoded_frames:
            raise InputTooLarge(
                f"the {self.source.describe()} needs more than {self.limits.max_decoded_frames:,} decoded frames "
                f"for this clip; this server decodes at most {self.limits.max_decoded_frames:,} (max_decoded_frames). "
                f"Ask for a shorter clip or fewer seconds from the start."
            )
        if time.perf_counter() > self.deadline:
            raise InputTooLarge(
                f"decoding the {self.source.describe()} took more than {self.limits.max_decode_seconds:g} s "
                f"({self.decoded:,} frames decoded); this server decodes for at most "
                f"{self.limits.max_decode_seconds:g} s (max_decode_seconds). Send a smaller or shorter video."
            )


class _Picker:
    """Takes (time, frame) pairs in display order and keeps, for each target time, the frame shown then: the last
    one at or before it (targets before the first frame get the first frame). A frame becomes RGB only when picked,
    and once however often it is picked."""

    def __init__(self, targets: Sequence[float], to_rgb: Callable[[Any], np.ndarray], eps: float) -> None:
        self.targets, self.to_rgb, self.eps = list(targets), to_rgb, eps
        self.picked: list[tuple[float, np.ndarray]] = []
        self.prev: list[Any] | None = None  # [time, frame, its RGB once converted]
        self.last_end = 0.0  # where the frames seen so far end: the latest time plus that frame's duration

    @property
    def done(self) -> bool:
        return len(self.picked) == len(self.targets)

    def _pick_prev(self) -> None:
        assert self.prev is not None
        if self.prev[2] is None:
            self.prev[2] = self.to_rgb(self.prev[1])
        self.picked.append((self.prev[0], self.prev[2]))

    def feed(self, when: float, frame: Any, length: float) -> None:
        first = self.prev is None
        while not first and not self.done and when > self.targets[len(self.picked)] + self.eps:
            self._pick_prev()
        self.last_end = max(self.last_end, when + length)
        if self.done:
            return
        self.prev = [when, frame, None]
        while first and not self.done and self.targets[len(self.picked)] < when - self.eps:
            self._pick_prev()

    def finish(self) -> None:
        """End of the stream: the remaining targets get the last frame."""
        while self.prev is not None and not self.done:
            self._pick_prev()


def _alpha_over_white(rgba: np.ndarray) -> np.ndarray:
    """``[4, H, W]`` -> ``[3, H, W]``, composited over white like :func:`vizserve.decode.read_image`."""
    a = rgba[3:].astype(np.uint16)
    return ((rgba[:3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


class _AvReader:
    """A container FFmpeg demuxes, through PyAV."""

    def __init__(self, data: bytes, source: _Source, limits: VideoLimits) -> None:
        self.data, self.source, self.limits = data, source, limits
        self.fit: FrameResizer | None = None  # what read_clip resizes each frame with as it is taken
        self.container: Any = None
        self.stream: Any = None
        self.offset = 0.0  # the stream's start time: frame times are counted from it
        self.eps = 1e-6  # how precise its timestamps are: half a unit of its time base (Matroska rounds to 1 ms)

    def open(self) -> None:
        import av

        src, limits = self.source, self.limits
        src.width, src.height = _header_size(src.container, self.data)
        _check_pixels(src, limits)  # from the container's own header, where it is simple to read
        # max_pixels: FFmpeg refuses larger frames itself, during probing and decoding; the timeout interrupts
        # FFmpeg's reads (opening, probing, demuxing) once the decode budget is spent.
        self.container = av.open(
            io.BytesIO(self.data),
            format=VIDEO_FORMATS[src.container],
            options={"max_pixels": str(limits.max_pixels_per_frame)},
            timeout=limits.max_decode_seconds,
            metadata_errors="replace",  # a title in Latin-1 must not make the video unreadable
        )
        videos = self.container.streams.video
        if not videos:
            streams = self.container.streams
            kinds = ", ".join(f"{s.type} {s.codec_context.name if s.codec_context else '?'}" for s in streams)
            raise InvalidInput(f"the {src.describe()} has no video stream (streams: {kinds or 'none'})")
        stream = self.stream = videos[0]
        ctx = stream.codec_context
        if ctx is None:
            raise InvalidInput(
                f"the {src.describe()} has a video stream in a codec FFmpeg cannot decode here; send H.264, HEVC, "
                f"AV1, VP8, VP9, MPEG-4 or Motion JPEG"
            )
        # PyAV's default threading (slices) is kept: frame threads were no faster on 2 busy cores, and each
        # holds a frame more; a TorchServe host runs several workers anyway.
        ctx.options = {"max_pixels": str(limits.max_pixels_per_frame)}
        src.codec, src.width, src.height = ctx.name, ctx.width, ctx.height
        rate = stream.average_rate or stream.guessed_rate
        src.fps = float(rate) if rate and float(rate) <= 1000 else None  # APNG's guess is its time base, 100,000
        tb = stream.time_base
        self.eps = float(tb) / 2 + 1e-9 if tb else 1e-6
        if stream.start_time is not None and tb:
            self.offset = float(stream.start_time * tb)
        if stream.duration and tb:
            src.duration = float(stream.duration * tb)
        elif self.container.duration:
            src.duration = self.container.duration / 1_000_000 - max(0.0, self.offset)
        if src.duration is not None and src.duration <= 0:  # a broken header: the timestamps will tell
            src.duration = None
        if src.container == "APNG" and (timing := _apng_timing(self.data)) and timing[1] > 0:
            src.duration, src.fps = timing[1], timing[0] / timing[1]

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def frames(self, start: float, budget: _Budget) -> Iterator[tuple[float, Any, float]]:
        stream, tb = self.stream, self.stream.time_base
        step = 1 / self.source.fps if self.source.fps else 0.04
        if start > 0 and tb:
            try:
                self.container.seek(int((start + self.offset) / tb), stream=stream, backward=True)
            except Exception:  # a demuxer that cannot seek: decode from the beginning instead
                self.close()
                self.open()
                stream, tb = self.stream, self.stream.time_base
        index = 0
        for packet in self.container.demux(stream):
            budget.tick()
            for frame in packet.decode():
                budget.tick(1)
                when = frame.time - self.offset if frame.time is not None else index * step
                length = float(frame.duration * tb) if frame.duration and tb else step
                index += 1
                yield when, frame, length

    def to_rgb(self, frame: Any) -> np.ndarray:
        """The frame as planar RGB ``[3, H, W]`` uint8 at the header's size. Read from swscale's planar GBR(A)
        output: 4x faster than packed rgb24 and a transpose to channels first (20 ms against 76 for 16 frames of
        720p)."""
        w, h = self.source.width or frame.width, self.source.height or frame.height
        alpha = any(c.is_alpha for c in frame.format.components)
        planar = frame.reformat(format="gbrap" if alpha else "gbrp", width=w, height=h)
        planes = [np.frombuffer(p, np.uint8).reshape(h, p.line_size)[:, :w] for p in planar.planes]
        order = [2, 0, 1, 3] if alpha else [2, 0, 1]  # G, B, R(, A) -> R, G, B(, A)
        out = np.stack([planes[i] for i in order])
        return _alpha_over_white(out) if alpha else out


class _WebpReader:
    """An animated WebP, through Pillow (libwebp's animation decoder): times from the ANMF chunks' durations."""

    def __init__(self, data: bytes, source: _Source, limits: VideoLimits) -> None:
        self.data, self.source, self.limits = data, source, limits
        self.fit: FrameResizer | None = None  # what read_clip resizes each frame with as it is taken
        self.image: Image.Image | None = None
        self.durations: list[float] = []
        self.eps = 5e-4  # ANMF durations are whole milliseconds

    def open(self) -> None:
        src = self.source
        src.width, src.height, count, durations = _webp_walk(self.data)
        src.codec = "webp"
        self.durations = [d / 1000 for d in durations]
        if count >= _WALK_STEPS:
            raise InvalidInput(f"the {src.describe()} has more than {_WALK_STEPS:,} chunks; this server reads fewer")
        total = sum(self.durations)
        src.duration = total if total > 0 else None
        src.fps = count / total if total > 0 else None
        _check_pixels(src, self.limits)  # libwebp allocates the whole canvas when it opens the file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decided, above
            self.image = Image.open(io.BytesIO(self.data), formats=["WEBP"])
        if self.image.size != (src.width, src.height):
            raise InvalidInput(f"the {src.describe()} has a canvas of {self.image.size} in its frames' decoder")

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None

    def frames(self, start: float, budget: _Budget) -> Iterator[tuple[float, Any, float]]:
        assert self.image is not None
        when = 0.0
        for k, length in enumerate(self.durations):
            budget.tick(1)
            self.image.seek(k)
            self.image.load()  # libwebp composites each frame over the one before: every frame is decoded
            if when + length > start or k + 1 == len(self.durations):
                yield when, self.image.copy(), length or 0.1
            when += length

    def to_rgb(self, frame: Image.Image) -> np.ndarray:
        return np.asarray(_to_rgb(frame)).transpose(2, 0, 1)  # [3, H, W]


def _header_size(container: str, data: bytes) -> tuple[int, int]:
    """``(width, height)`` that a GIF's screen descriptor, an APNG's IHDR or an AVI's video stream format
    (BITMAPINFOHEADER) claims, read before FFmpeg opens the file; ``(0, 0)`` for the other containers, where FFmpeg's
    own ``max_pixels`` check guards its probing."""
    if container == "GIF" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if container == "APNG" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if container == "AVI":
        head = data[: 1 << 20]  # the header list comes before the frames ('movi')
        at = head.find(b"strh")
        while at >= 0 and head[at + 8 : at + 12] != b"vids":  # the first video stream's header, then its format
            at = head.find(b"strh", at + 4)
        at = head.find(b"strf", at) if at >= 0 else -1
        if at >= 0 and at + 20 <= len(head):
            width = int.from_bytes(head[at + 12 : at + 16], "little", signed=True)
            height = int.from_bytes(head[at + 16 : at + 20], "little", signed=True)
            return abs(width), abs(height)  # a negative height means rows top-down
    return 0, 0


def _check_pixels(src: _Source, limits: VideoLimits) -> None:
    if src.width * src.height > limits.max_pixels_per_frame:
        raise InputTooLarge(
            f"the {src.describe()} has frames of {src.width:,}x{src.height:,} = {src.width * src.height:,} pixels; "
            f"this server takes at most {limits.max_pixels_per_frame:,} per frame (max_pixels_per_frame, 4096x2160). "
            f"Downscale it first."
        )


def _check_size(src: _Source, limits: VideoLimits, frames: int, fit: FrameResizer | None = None) -> None:
    """The clip as it will be held: ``frames`` frames of the video's size, or of ``fit``'s output (which checks the
    frames' shape too)."""
    _check_pixels(src, limits)
    h, w = src.height, src.width
    if fit is not None and h and w:
        fit.check(h, w, src.describe())
        h, w = fit.output_size(h, w)
    if frames * w * h * 3 > limits.max_clip_bytes:
        raise InputTooLarge(
            f"{frames} frames of the {src.describe()} are {frames * w * h * 3:,} bytes decoded; "
            f"this server holds at most {limits.max_clip_bytes:,} (max_clip_bytes). Ask for fewer frames or send "
            f"a smaller video."
        )


def _check_request(frames: int, start: float, clip: float | None, fps: float | None, limits: VideoLimits) -> None:
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise InvalidOption(f"frames must be a whole number of at least 1, got {_clip(repr(frames), 40)}")
    if frames > limits.max_frames:
        raise InputTooLarge(f"frames={frames:,}; this server samples at most {limits.max_frames} frames (max_frames)")
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise InvalidOption(f"start must be a number of seconds >= 0, got {_clip(repr(start), 40)}")
    if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise InvalidOption(f"clip must be a number of seconds > 0, got {_clip(repr(clip), 40)}")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InvalidOption(f"fps must be > 0, got {_clip(repr(fps), 40)}")


def read_clip(
    data: bytes,
    *,
    frames: int,
    start: float = 0.0,
    clip: float | None = None,
    fps: float | None = None,
    limits: VideoLimits = VideoLimits(),
    fit: FrameResizer | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode a clip of ``frames`` frames from the video in ``data``, as uint8 RGB ``[3, T, H, W]`` (T = ``frames``,
    H x W the video's own size), with an info dict.

    The frames are sampled evenly over ``clip`` seconds from ``start`` (seconds from the video's first frame,
    default 0): at ``start + k * clip / frames`` for k = 0..T-1, each the frame shown at that time. ``clip``
    defaults to ``frames / fps`` (``fps``: the model's training rate, e.g. 16 frames at 15 fps is 1.07 s; without
    it, the video's own rate: consecutive frames). When less than ``clip`` is left after ``start``, the frames are
    spread evenly over what there is, and a video with fewer frames than T repeats some. Only what is needed is
    decoded: from the keyframe before ``start`` (a seek) to the last sampled time.

    Transparent pixels (GIF, APNG, WebP) are composited over white, as for images.

    ``fit``: a :class:`FrameResizer` (the model's resize), applied to each frame as it is taken (uint8 ``[3, H, W]``
    -> ``[3, h, w]``), so that a clip of 4K frames never exists at 4K: the clip returned is ``[3, T, h, w]``.

    The info dict: ``container`` (MP4, MOV, WebM, MKV, AVI, GIF, APNG, WebP), ``codec``, ``width``, ``height``,
    ``fps`` (the video's, from its header), ``duration`` (seconds, from its header; None where it has none),
    ``decoded`` (frames decoded), ``start``, ``clip`` (the seconds sampled over), ``timestamps`` (the times of the
    frames taken, seconds from the first frame), ``repeated`` (how many of the T are repeats of the one before) and
    ``sampling`` (one sentence on what was done).

    Raises InvalidInput (400) for what is not a readable video (not a container listed above, truncated, broken,
    no frames), InvalidOption (400) for a bad ``frames``, ``start``, ``clip`` or ``fps`` or a ``start`` past the
    end, and InputTooLarge (413) past any of ``limits`` (see :class:`VideoLimits`).
    """
    _check_request(frames, start, clip, fps, limits)
    frames = int(frames)
    if len(data) > limits.max_bytes:
        raise InputTooLarge(
            f"video is {len(data):,} bytes; this server takes at most {limits.max_bytes:,} (max_bytes). "
            f"Cut or re-encode it first."
        )
    container = sniff_video(data)
    if container is None:
        raise InvalidInput(
            f"field 'data' is not a video this server reads (first bytes {bytes(data[:12])!r}); send {_ACCEPTED}"
        )
    source = _Source(container, len(data))
    reader_type = _WebpReader if VIDEO_FORMATS[container] is None else _AvReader
    reader = reader_type(data, source, limits)
    budget = _Budget(limits, source)
    try:
        return _sample(reader, source, budget, frames=frames, start=float(start), clip=clip, fps=fps, fit=fit)
    except (InvalidInput, InvalidOption, InputTooLarge):
        raise
    except Exception as exc:  # PyAV's, libwebp's and Pillow's errors: all the file's doing
        raise _as_viz_error(exc, source, budget) from exc
    finally:
        try:
            reader.close()
        except Exception:  # closing a broken container must not hide the real answer
            pass


def _as_viz_error(exc: Exception, source: _Source, budget: _Budget) -> InvalidInput | InputTooLarge:
    import av

    if isinstance(exc, av.error.ExitError):  # FFmpeg's interrupt callback: our timeout
        return InputTooLarge(
            f"reading the {source.describe()} took more than {budget.limits.max_decode_seconds:g} s; this server "
            f"decodes for at most {budget.limits.max_decode_seconds:g} s (max_decode_seconds)"
        )
    if isinstance(exc, MemoryError) and not isinstance(exc, av.error.FFmpegError):  # FFmpeg's ENOMEM: a bogus size
        return InputTooLarge(f"the {source.describe()} needs more memory to decode than this server gives it")
    what = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else str(exc)
    said = f"{'FFmpeg' if isinstance(exc, av.error.FFmpegError) else 'the decoder'} says {_clip(what)!r}"
    if not source.codec:  # the container did not open
        return InvalidInput(
            f"cannot read field 'data' as {source.container} ({source.size:,} bytes, by its first bytes): {said}. "
            f"Is the file whole? This server reads {_ACCEPTED}."
        )
    unsized = "" if source.width else " FFmpeg could not read its frame size (past max_pixels_per_frame, or broken)."
    return InvalidInput(
        f"cannot decode the {source.describe()} after {budget.decoded:,} frames: {said}. Is the file whole?{unsized}"
    )


def _sample(
    reader: Any,
    src: _Source,
    budget: _Budget,
    *,
    frames: int,
    start: float,
    clip: float | None,
    fps: float | None,
    fit: FrameResizer | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    limits = budget.limits
    if fit is not None:
        to_rgb = reader.to_rgb
        reader.to_rgb = lambda frame: fit(to_rgb(frame))  # each frame resized as it is taken
        reader.fit = fit
    reader.open()
    _check_size(src, limits, frames, fit)
    if src.duration is not None and src.duration > limits.max_duration_s:
        raise InputTooLarge(
            f"the {src.describe()} is {src.duration:,.1f} s long; this server takes videos of at most "
            f"{limits.max_duration_s:g} s (max_duration_s). Cut it first."
        )
    rate = fps or src.fps or 25.0
    wanted = clip if clip is not None else frames / rate
    if src.duration is not None and start >= src.duration:
        raise InvalidOption(f"start={start:g} s is past the end of the {src.describe()}")
    span = wanted if src.duration is None else min(wanted, src.duration - start)
    if src.fps and span * src.fps > limits.max_decoded_frames:
        raise InputTooLarge(
            f"{span:g} s of the {src.describe()} are about {span * src.fps:,.0f} frames to decode; this server "
            f"decodes at most {limits.max_decoded_frames:,} (max_decoded_frames). Ask for a shorter clip."
        )
    picker = _run(reader, src, budget, _targets(start, span, frames), start)
    if not picker.done:  # the stream ended before the last time sampled
        end = picker.last_end
        if picker.prev is None:
            if start > 0:
                raise InvalidOption(f"start={start:g} s is past the last frame of the {src.describe()}")
            raise InvalidInput(f"the {src.describe()} has no frames that decode")
        if src.duration is not None and end + max(0.5, 0.05 * src.duration) < src.duration:
            raise InvalidInput(
                f"the {src.describe()} ends at {_seconds(end)}, although its header says "
                f"{_seconds(src.duration)}: it is truncated or broken ({budget.decoded:,} frames decoded). Send the "
                f"whole file."
            )
        if end <= start:
            last = _seconds(end)
            raise InvalidOption(f"start={start:g} s is past the last frame of the {src.describe()} (at {last})")
        span = end - start
        reader.close()
        reader.open()
        picker = _run(reader, src, budget, _targets(start, span, frames), start)
        picker.finish()
    first = picker.picked[0][1]  # into one array frame by frame: np.stack would hold every frame twice
    clip_rgb = np.empty((first.shape[0], len(picker.picked), *first.shape[1:]), np.uint8)  # [3, T, H, W]
    for t, (_, rgb) in enumerate(picker.picked):
        clip_rgb[:, t] = rgb
    times = [round(when, 6) for when, _ in picker.picked]
    repeated = sum(1 for a, b in zip(times, times[1:], strict=False) if a == b)
    if span < wanted - 1e-6:
        how = (
            f"the video has {span:.3g} s from {start:g} s, less than the {wanted:.3g} s asked: {frames} frames "
            f"spread over {span:.3g} s"
        )
    else:
        how = f"{frames} frames over {span:.3g} s from {start:g} s, one every {span / frames:.3g} s"
    if repeated:
        how += f"; {repeated} of them repeat the frame before (the video has fewer frames there)"
    info = {
        "container": src.container,
        "codec": src.codec,
        "width": int(src.width or clip_rgb.shape[3]),
        "height": int(src.height or clip_rgb.shape[2]),
        "fps": src.fps,
        "duration": src.duration,
        "decoded": budget.decoded,
        "start": start,
        "clip": span,
        "timestamps": times,
        "repeated": repeated,
        "sampling": how,
    }
    return torch.from_numpy(clip_rgb), info


def _targets(start: float, span: float, frames: int) -> list[float]:
    return [start + span * k / frames for k in range(frames)]


def _run(reader: Any, src: _Source, budget: _Budget, targets: list[float], start: float) -> _Picker:
    picker = _Picker(targets, reader.to_rgb, reader.eps)
    limit = budget.limits.max_duration_s
    for when, frame, length in reader.frames(start, budget):
        if when > limit:  # a header without a duration, or one that understates it
            raise InputTooLarge(
                f"the {src.describe()} has frames past {limit:g} s; this server takes videos of at most {limit:g} s "
                f"(max_duration_s). Cut it first."
            )
        if not src.width:  # a header without the frame size: the first frame's, checked as the header's would be
            src.width, src.height = frame.width, frame.height
            _check_size(src, budget.limits, len(targets), reader.fit)
        picker.feed(when, frame, length)
        if picker.done:
            break
    else:
        if picker.prev is not None and targets[-1] < picker.last_end - reader.eps:
            picker.finish()  # the last times fall within the last frame
    return picker


# -- what a clip will cost, from its header ----------------------------------------------------------------------

#: Seconds before ``start`` a decoder may have to begin at (the keyframe before it): a common GOP, for estimates.
PREROLL_S = 2.0


def probe_clip(
    data: bytes, *, frames: int, start: float = 0.0, clip: float | None = None, fps: float | None = None,
    limits: VideoLimits = VideoLimits(), fit: FrameResizer | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What decoding ``frames`` frames of the video in ``data`` will take, from its header alone (the container's
    header and FFmpeg's probe, bounded as :func:`read_clip` bounds them; GIF, APNG and WebP by a walk over their
    blocks): ``{"width", "height", "fps", "duration", "decoded": frames to decode, "what": the video in words}``.
    ``decoded`` counts from the keyframe before ``start`` (up to :data:`PREROLL_S` earlier) to the last frame
    sampled, for GIF, APNG and WebP (which cannot seek) from their first frame. Raises what :func:`read_clip` would
    for what the header shows already: not a video, too large, frames that ``fit`` cannot take (too thin)."""
    _check_request(frames, start, clip, fps, limits)
    if len(data) > limits.max_bytes:
        raise InputTooLarge(f"video is {len(data):,} bytes; this server takes at most {limits.max_bytes:,} (max_bytes)")
    container = sniff_video(data)
    if container is None:
        raise InvalidInput(
            f"field 'data' is not a video this server reads (first bytes {bytes(data[:12])!r}); send {_ACCEPTED}"
        )
    source = _Source(container, len(data))
    if fit is not None:  # frames too thin for the model: refused from the header alone, before FFmpeg opens the file
        width, height = _webp_walk(data, stop=1)[:2] if container == "WebP" else _header_size(container, data)
        if width and height:
            fit.check(height, width, f"{container} ({len(data):,} bytes)")
    reader = (_WebpReader if VIDEO_FORMATS[container] is None else _AvReader)(data, source, limits)
    budget = _Budget(limits, source)
    try:
        reader.open()
    except (InvalidInput, InvalidOption, InputTooLarge):
        raise
    except Exception as exc:
        raise _as_viz_error(exc, source, budget) from exc
    finally:
        try:
            reader.close()
        except Exception:
            pass
    if container == "GIF" and not source.duration:  # FFmpeg's GIF header has no duration: count the images
        count = _gif_images(data, stop=limits.max_decoded_frames + 1)
        source.duration = count / (source.fps or 10.0)
    _check_pixels(source, limits)
    if fit is not None and source.width:
        fit.check(source.height, source.width, source.describe())
    src_fps = source.fps or 25.0
    wanted = clip if clip is not None else frames / (fps or src_fps)
    span = wanted if source.duration is None else max(0.0, min(wanted, source.duration - start))
    seekable = container not in ("GIF", "APNG", "WebP")
    first = max(0.0, start - PREROLL_S) if seekable else 0.0
    decoded = min(limits.max_decoded_frames, math.ceil((start + span - first) * src_fps) + 1)
    return {"width": source.width, "height": source.height, "fps": source.fps, "duration": source.duration,
            "decoded": max(decoded, 1), "what": source.describe()}  # fmt: skip


# -- transform -----------------------------------------------------------------------------------------------------

#: A frame whose resize would be more than this many times the pixels the model's crop keeps is refused before it
#: is decoded (a 20,000 x 1 GIF resized to a short side of 64 is 1,280,000 x 64: 245 MB a frame).
MAX_FRAME_GROWTH = 16


class FrameResizer:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, h, w]``: the resize of torchvision's video transform (``resize``: the
    short side, or ``(h, w)``), with ``interpolation`` and no antialiasing, frame by frame, for :func:`read_clip`'s
    ``fit``. Refuses (413) frames whose resize is over :data:`MAX_FRAME_GROWTH` times the pixels of ``crop``."""

    def __init__(self, resize: tuple[int, int] | int, crop: tuple[int, int] | int, interpolation: str = "bilinear"):
        from torchvision.transforms import InterpolationMode

        self.resize = resize
        self.crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
        self.mode = InterpolationMode(interpolation)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """``(h, w)`` of a frame after the resize (torchvision's rule for a short side)."""
        if not isinstance(self.resize, int):
            return tuple(self.resize)
        short, long = (h, w) if h <= w else (w, h)
        long = int(self.resize * long / max(1, short))
        return (self.resize, long) if h <= w else (long, self.resize)

    def check(self, h: int, w: int, what: str = "video") -> None:
        oh, ow = self.output_size(h, w)
        keep = self.crop[0] * self.crop[1]
        if oh * ow > MAX_FRAME_GROWTH * keep:
            raise InputTooLarge(
                f"the {what} has frames of {w:,}x{h:,}, which this model resizes to {ow:,}x{oh:,} to crop "
                f"{self.crop[1]}x{self.crop[0]}: more than {MAX_FRAME_GROWTH} times what it keeps. Crop the video "
                f"to an aspect ratio within {MAX_FRAME_GROWTH}:1 of the model's ({self.crop[1]}x{self.crop[0]})."
            )

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from torchvision.transforms import functional as TF

        self.check(*rgb.shape[1:])
        size = list(self.output_size(*rgb.shape[1:]))
        return TF.resize(torch.from_numpy(np.ascontiguousarray(rgb)), size, interpolation=self.mode,
                         antialias=False).numpy()  # fmt: skip


def video_transform(
    resize: tuple[int, int] | int,
    crop: tuple[int, int] | int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
    *,
    resized: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 RGB ``[3, T, H, W]`` -> normalized float ``[3, T, *crop]``, exactly as torchvision's video weights'
    ``transforms()`` (``VideoClassification``: R3D-18's is ``resize=(128, 171)``, ``crop=(112, 112)``, Kinetics
    mean and std): each frame resized to ``resize`` (``(h, w)``, or an int for the short side) with
    ``interpolation`` and no antialiasing (as torchvision does, to match how the weights were trained), centre-cropped
    to ``crop``, scaled to [0, 1] and normalized. Frames are done one at a time, so a 4K clip needs little more
    than its own memory, and faster: 16 frames of 720p in 26 ms against 89 (median, this 2-core CPU).
    ``resized``: the frames were resized already (:class:`FrameResizer` as :func:`read_clip`'s ``fit``): crop and
    normalize only."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    size = [resize] if isinstance(resize, int) else list(resize)
    crop_hw = [crop, crop] if isinstance(crop, int) else list(crop)
    mode = InterpolationMode(interpolation)

    def transform(clip: torch.Tensor) -> torch.Tensor:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise InvalidInput(f"a clip is [3, T, H, W]; got {list(clip.shape)}")
        frames = clip.permute(1, 0, 2, 3)  # [T, 3, H, W]: torchvision's layout
        out = torch.empty((frames.shape[0], 3, *crop_hw), dtype=torch.float32)
        for t, frame in enumerate(frames):  # one at a time: its float copy stays in the cache
            part = frame if resized else TF.resize(frame, size, interpolation=mode, antialias=False)
            part = TF.convert_image_dtype(TF.center_crop(part, crop_hw), torch.float)
            out[t] = TF.normalize(part, mean=list(mean), std=list(std))
        return out.permute(1, 0, 2, 3)

    return transform
