"""Video in: container sniffing, clip decoding and sampling on files made here with PyAV and Pillow, broken and
hostile ones, .npy clips, and the transform against torchvision's own."""

import functools
import io
import re
import struct
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz import InputTooLarge, InvalidInput, InvalidOption, VizError
from tests.images import encode, npy, photo
from vizserve import read_npy
from vizserve.video import VideoLimits, is_video, read_clip, sniff_video, video_transform

# -- .npy clips ----------------------------------------------------------------------------------------------------


def test_npy_clip_used_exactly_as_given():
    arr = np.random.default_rng(0).normal(size=(3, 5, 16, 12)).astype(np.float32)
    got = read_npy(npy(arr), min_side=8, max_side=64, rank=4, max_frames=8)
    assert got.dtype == torch.float32
    assert np.array_equal(got.numpy(), arr)
    fortran = np.asfortranarray(arr)
    assert np.array_equal(read_npy(npy(fortran), min_side=8, max_side=64, rank=4).numpy(), arr)


@pytest.mark.parametrize(
    "shape, error, match",
    [
        ((3, 16, 16), InvalidInput, r"shape \[3, 16, 16\]; expected \[3, T, H, W\]"),
        ((4, 2, 16, 16), InvalidInput, r"shape \[4, 2, 16, 16\]; expected \[3, T, H, W\]"),
        ((3, 9, 16, 16), InputTooLarge, r"9 frames; this server takes at most 8"),
        ((3, 0, 16, 16), InvalidInput, r"it has no frames"),
        ((3, 2, 4, 16), InvalidInput, r"is \[3, 2, 4, 16\]; H and W must be within 8\.\.64"),
        ((3, 2, 16, 65), InputTooLarge, r"is \[3, 2, 16, 65\]; H and W must be within 8\.\.64"),
    ],
)
def test_bad_npy_clips(shape, error, match):
    with pytest.raises(error, match=match):
        read_npy(npy(np.zeros(shape, np.float32)), min_side=8, max_side=64, rank=4, max_frames=8)


def test_npy_clip_values_and_length_are_checked():
    arr = np.zeros((3, 2, 8, 8), np.float32)
    arr[1, 1, 2, 2] = np.nan
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        read_npy(npy(arr), min_side=1, max_side=64, rank=4)
    with pytest.raises(InvalidInput, match=r"\[3, 2, 8, 8\] needs 1536 bytes of data, got 1532"):
        read_npy(npy(np.zeros((3, 2, 8, 8), np.float32))[:-4], min_side=1, max_side=64, rank=4)


def test_npy_default_rank_still_wants_an_image():
    with pytest.raises(InvalidInput, match=r"shape \[3, 2, 8, 8\]; expected \[3, H, W\] \(normalized RGB\)"):
        read_npy(npy(np.zeros((3, 2, 8, 8), np.float32)), min_side=1, max_side=64)


# -- files made here -----------------------------------------------------------------------------------------------

FPS = 20  # 50 ms a frame: exact in every container's time base (GIF counts 1/100 s)
N = 40  # 2 s
W, H = 176, 32
STEP = 4  # the square moves 4 px a frame: frames k and k + 1 are told apart even after lossy coding


def square_frames(n: int = N, width: int = W, height: int = H) -> np.ndarray:
    """``[n, h, w, 3]`` uint8: a white square on black (16 px, or a quarter of a narrow frame), at x = 4 k in frame
    k (wrapping round in a narrow frame)."""
    side = min(16, width // 4, height // 2)
    a = np.zeros((n, height, width, 3), np.uint8)
    for k in range(n):
        x = (STEP * k) % (width - side)
        a[k, (height - side) // 2 : (height + side) // 2, x : x + side] = 255
    return a


def square_x(clip: torch.Tensor, side: int = 16) -> list[float]:
    """Left edge of the square in each frame of a clip ``[3, T, H, W]``, from the centroid of its bright columns."""
    bright = clip.float().mean(0) > 128  # [T, H, W]
    cols = torch.arange(clip.shape[-1]).float()
    weight = bright.sum(1).float()  # [T, W]
    return ((weight * cols).sum(1) / weight.sum(1) - (side - 1) / 2).tolist()


# container -> (PyAV format, encoder, pixel format, encoder options)
CODECS = {
    "MP4": ("mp4", "libx264", "yuv420p", {}),
    "MOV": ("mov", "libx264", "yuv420p", {}),
    "WebM": ("webm", "libvpx-vp9", "yuv420p", {"crf": "20", "b": "0"}),
    "MKV": ("matroska", "libvpx", "yuv420p", {"crf": "10", "b": "1M"}),
    "AVI": ("avi", "mpeg4", "yuv420p", {"qscale": "2"}),
    "AVI-MJPEG": ("avi", "mjpeg", "yuvj420p", {}),
}


def video(container: str, frames: np.ndarray | None = None, fps: float = FPS, **opts) -> bytes:
    """A video file of ``frames`` (default: the moving square) made with PyAV."""
    fmt, codec, pix, options = CODECS[container]
    frames = square_frames() if frames is None else frames
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options={**options, **opts})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix
        for a in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def animated(fmt: str, frames: np.ndarray | None = None, ms: int = 1000 // FPS, **kw) -> bytes:
    """An animated GIF, WebP or PNG of ``frames`` (default: the moving square) made with Pillow."""
    frames = square_frames() if frames is None else frames
    images = [Image.fromarray(a) for a in frames]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=ms, loop=0, **extra, **kw)


ALL = [*CODECS, "GIF", "WebP", "APNG"]


@functools.cache
def made(container: str) -> bytes:
    if container in CODECS:
        return video(container)
    return animated({"GIF": "GIF", "WebP": "WEBP", "APNG": "PNG"}[container])


# -- sniffing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ALL)
def test_every_container_is_recognized(container):
    assert sniff_video(made(container)) == container.split("-")[0]
    assert is_video(made(container))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_still_images_are_not_videos(fmt):
    assert not is_video(encode(photo(32, 32), fmt))
    one = [Image.fromarray(square_frames(1)[0])]
    if fmt in ("PNG", "WEBP", "GIF"):  # one frame written as an animation is still a still
        assert not is_video(encode(one[0], fmt, save_all=True, append_images=[], duration=50, loop=0))


def test_other_bytes_are_not_videos():
    heif = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    for data in [b"", b"\x00" * 64, b"hello", heif, npy(np.zeros((3, 2, 2), np.float32)), b"RIFF\x00\x00\x00\x00WAVE"]:
        assert not is_video(data)


# -- decoding and sampling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ALL)
def test_consecutive_frames_at_the_videos_own_rate(container):
    clip, info = read_clip(made(container), frames=8, fps=FPS)
    assert clip.dtype == torch.uint8 and clip.shape == (3, 8, H, W)
    assert info["container"] == container.split("-")[0]
    assert info["timestamps"] == pytest.approx([k / FPS for k in range(8)], abs=1e-3)
    assert square_x(clip) == pytest.approx([STEP * k for k in range(8)], abs=1)
    assert info["duration"] == pytest.approx(N / FPS, abs=0.06)
    assert info["repeated"] == 0
    assert info["decoded"] <= 8 + 8  # up to the frame after the last one taken (and a decoder's delay)


@pytest.mark.parametrize("container", ALL)
def test_start_and_clip_sample_evenly(container):
    clip, info = read_clip(made(container), frames=5, start=0.5, clip=1.0)
    want = [10, 14, 18, 22, 26]  # frames at 0.5, 0.7, 0.9, 1.1, 1.3 s
    assert info["timestamps"] == pytest.approx([k / FPS for k in want], abs=1e-3)
    assert square_x(clip) == pytest.approx([STEP * k for k in want], abs=1)
    assert info["start"] == 0.5 and info["clip"] == pytest.approx(1.0)
    assert info["sampling"] == "5 frames over 1 s from 0.5 s, one every 0.2 s"


def test_the_models_rate_sets_the_clip():
    # 4 frames at the model's 10 fps: 0.4 s of a 20 fps video, every other frame
    clip, info = read_clip(made("MP4"), frames=4, fps=10)
    assert info["timestamps"] == pytest.approx([0, 0.1, 0.2, 0.3])
    assert square_x(clip) == pytest.approx([0, 8, 16, 24], abs=1)
    assert info["codec"] == "h264" and info["fps"] == FPS and (info["width"], info["height"]) == (W, H)


@pytest.mark.parametrize("container", ["MP4", "WebM", "GIF", "WebP", "APNG"])
def test_a_short_video_is_sampled_over_what_there_is(container):
    # 1.5 s asked from 1.0 s of a 2 s video: 6 frames over the 1 s left
    clip, info = read_clip(made(container), frames=6, start=1.0, clip=1.5)
    assert info["clip"] == pytest.approx(1.0, abs=1e-3)
    want = [20, 23, 26, 30, 33, 36]  # the frames shown at 1.0 + k / 6 s
    assert square_x(clip) == pytest.approx([STEP * k for k in want], abs=1)
    assert info["sampling"].startswith("the video has 1 s from 1 s, less than the 1.5 s asked: 6 frames spread")


def test_fewer_frames_than_asked_repeat_and_say_so():
    data = video("MP4", square_frames(5))  # 5 frames, 0.25 s
    clip, info = read_clip(data, frames=10, fps=FPS)
    assert square_x(clip) == pytest.approx([STEP * (k // 2) for k in range(10)], abs=1)
    assert info["repeated"] == 5
    assert "5 of them repeat the frame before" in info["sampling"]


def test_a_seek_decodes_from_the_keyframe_before_start_only():
    data = video("MP4", square_frames(N), g="10")  # a keyframe every 10 frames
    clip, info = read_clip(data, frames=2, start=1.5, clip=0.1)
    assert square_x(clip) == pytest.approx([STEP * 30, STEP * 31], abs=1)
    assert info["decoded"] <= 2 + 1 + 10  # from frame 30's keyframe, plus the decoder's delay


def test_transparency_is_composited_over_white():
    frames = [Image.new("RGBA", (16, 16), (255, 0, 0, 0)), Image.new("RGBA", (16, 16), (0, 0, 255, 255))]
    for fmt in ("PNG", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
        clip, _ = read_clip(data, frames=2, fps=10)
        assert clip[:, 0, 8, 8].tolist() == [255, 255, 255] and clip[:, 1, 8, 8].tolist() == [0, 0, 255]


# -- broken and hostile files: a clear 4xx, quickly ----------------------------------------------------------------


def refused(error, data, match, seconds=2.0, **kw):
    """Assert ``read_clip`` raises ``error`` matching ``match`` within ``seconds``, and return the message."""
    kw.setdefault("frames", 8)
    kw.setdefault("fps", FPS)
    begin = time.perf_counter()
    with pytest.raises(error, match=match) as caught:
        read_clip(data, **kw)
    assert time.perf_counter() - begin < seconds
    assert type(caught.value) is error  # never PyAV's own, nor a subclass that would map to another status
    return str(caught.value)


@pytest.mark.parametrize("container", ["MP4", "MOV", "WebM", "MKV", "AVI", "AVI-MJPEG", "WebP"])
def test_a_truncated_file_is_a_400_that_names_it(container):
    data = made(container)
    message = refused(InvalidInput, data[: len(data) // 2], ".", clip=2.0)  # the whole video is needed
    name = container.split("-")[0]
    assert any(
        re.match(pattern, message)
        for pattern in (
            rf"cannot read field 'data' as {name} \([\d,]+ bytes, by its first bytes\): FFmpeg says '.+'\. Is the "
            r"file whole\?",  # the container's index or header is cut (an MP4's moov at the end)
            rf"cannot decode the {name} \(.+\) after \d+ frames: .+ says '.+'\. Is the file whole\?",
            rf"the {name} \(.+\) ends at [\d.]+ s, although its header says 2 s: it is truncated or broken",
        )
    ), message


def test_a_truncated_gif_or_apng_is_as_long_as_what_it_has():
    for container in ("GIF", "APNG"):  # neither has a duration in its header: FFmpeg counts the frames there are
        data = made(container)
        clip, info = read_clip(data[: len(data) // 2], frames=4, clip=2.0)
        assert 0.5 < info["duration"] < 1.5 and info["sampling"].startswith("the video has")


def test_a_truncated_file_still_gives_the_frames_before_the_cut():
    data = made("WebM")
    clip, info = read_clip(data[: len(data) // 2], frames=4, fps=FPS)
    assert square_x(clip) == pytest.approx([0, 4, 8, 12], abs=1)


@pytest.mark.parametrize("container", ["MP4", "MOV", "WebM", "MKV", "AVI"])
def test_a_container_without_frames(container):
    fmt, codec, pix, options = CODECS[container]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, pix
        out.start_encoding()  # header and trailer, no packets
    message = refused(InvalidInput, buf.getvalue(), rf"{container} ")
    assert any(s in message for s in ("has no frames that decode", "has no video stream", "cannot read field"))


def test_not_a_video():
    message = refused(InvalidInput, encode(photo(32, 32), "JPEG"), r"field 'data' is not a video this server reads")
    assert r"first bytes b'\xff\xd8\xff" in message and "send MP4, MOV, WebM, MKV, AVI, or an animated GIF" in message
    refused(InvalidInput, b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(100), r"cannot read field 'data' as AVI \(116 bytes")


def _avi_rawvideo() -> bytes:
    buf = io.BytesIO()  # raw frames: FFmpeg takes their size from the AVI header alone
    with av.open(buf, "w", format="avi") as out:
        stream = out.add_stream("rawvideo", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "bgr24"
        for a in square_frames(3, 16, 16):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
    return buf.getvalue()


def _patched(data: bytes, at: int, packed: bytes) -> bytes:
    return data[:at] + packed + data[at + len(packed) :]


def _huge_headers() -> dict[str, bytes]:
    avi = _avi_rawvideo()
    strf = avi.index(b"strf") + 8  # BITMAPINFOHEADER: size, then width and height
    gif, apng, webp = made("GIF"), made("APNG"), made("WebP")
    return {
        "AVI": _patched(avi, strf + 4, struct.pack("<ii", 60_000, 60_000)),
        "AVI-MJPEG": _patched(made("AVI-MJPEG"), made("AVI-MJPEG").index(b"strf") + 12, struct.pack("<ii", 8000, 8000)),
        "GIF": _patched(gif, 6, struct.pack("<HH", 65_535, 65_535)),  # the logical screen
        "APNG": _patched(apng, 16, struct.pack(">II", 60_000, 60_000)),  # IHDR (its CRC is not checked first)
        "WebP": _patched(webp, 24, (16_383).to_bytes(3, "little") * 2),  # VP8X canvas: 16,384 x 16,384
    }


@pytest.mark.parametrize("container", ["AVI", "AVI-MJPEG", "GIF", "APNG", "WebP"])
def test_a_huge_frame_size_in_the_header_is_refused_before_decoding(container):
    cap = r"this server takes at most 8,847,360 per frame \(max_pixels_per_frame, 4096x2160\)"
    message = refused(
        InputTooLarge, _huge_headers()[container], r"has frames of [\d,]+x[\d,]+ = [\d,]+ pixels; " + cap, 0.5
    )
    assert message.startswith(f"the {container.split('-')[0]} (")


def test_a_raw_avi_within_the_header_check_still_decodes():
    clip, info = read_clip(_avi_rawvideo(), frames=3, fps=FPS)
    assert info["codec"] == "rawvideo" and square_x(clip, side=4) == pytest.approx([0, 4, 8], abs=0.01)


def _long(container: str, seconds: int = 700) -> bytes:
    """Three 16 px frames at 0, seconds / 2 and seconds s: a long video in a few hundred bytes."""
    fmt, codec, pix, options = CODECS[container]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=1, options=options)
        stream.width, stream.height, stream.pix_fmt = 16, 16, pix
        stream.codec_context.time_base = Fraction(1, 1)
        for k, pts in enumerate((0, seconds // 2, seconds)):
            frame = av.VideoFrame.from_ndarray(square_frames(3, 16, 16)[k], format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.mark.parametrize("container", ["MP4", "WebM", "AVI", "GIF", "WebP", "APNG"])
def test_a_long_video_is_refused_from_its_header(container):
    if container in CODECS:
        data = _long(container)
    else:  # 12 frames of 60 s
        data = animated({"GIF": "GIF", "WebP": "WEBP", "APNG": "PNG"}[container], square_frames(12, 16, 16), 60_000)
    refused(InputTooLarge, data, rf"the {container} \(.*\) is 7[02]\d\.\d s long; this server takes videos of at most "
            r"600 s \(max_duration_s\)", 0.5)  # fmt: skip


def test_a_long_video_within_the_cap_decodes_only_what_is_needed():
    limits = VideoLimits(max_duration_s=3600)
    clip, info = read_clip(_long("MP4"), frames=2, start=340, clip=20, limits=limits)
    assert info["duration"] == pytest.approx(701) and info["timestamps"] == [0.0, 350.0]
    assert square_x(clip, side=4) == pytest.approx([0, 4], abs=1)


def test_frames_past_the_duration_cap_are_refused_while_decoding():
    # a Matroska file with its duration element removed: only the timestamps tell
    data = _long("MKV")
    at = data.index(b"\x44\x89")  # Duration: EBML id 4489, a one-byte size (0x88: 8 bytes), the float
    length = 3 + (data[at + 2] & 0x7F)
    data = _patched(data, at, b"\xec" + bytes([0x80 | (length - 2)]) + bytes(length - 2))  # a Void element instead
    with av.open(io.BytesIO(data)) as check:
        assert check.duration is None and check.streams.video[0].duration is None
    refused(InputTooLarge, data, r"the MKV \(.*\) has frames past 600 s", frames=2, clip=700)


@pytest.mark.parametrize("container", ALL)
def test_damaged_files_answer_a_4xx_or_a_clip_quickly(container):
    # bytes overwritten at random, and some cut short: a clip, or one of our errors, and never PyAV's own
    rng = np.random.default_rng(sum(container.encode()))
    base = made(container)
    for _ in range(12):
        mutant = np.frombuffer(base, np.uint8).copy()
        at = rng.integers(0, len(mutant), int(rng.choice([1, 4, 16, 64])))
        mutant[at] = rng.integers(0, 256, len(at))
        data = mutant[: rng.integers(len(mutant) // 2, len(mutant))] if rng.random() < 0.3 else mutant
        data = data.tobytes()
        begin = time.perf_counter()
        try:
            clip, _ = read_clip(data, frames=8, clip=2.0)
            assert clip.shape[:2] == (3, 8)
        except VizError as exc:
            assert exc.status in (400, 413)
        assert time.perf_counter() - begin < 2


def test_metadata_that_is_not_utf8_is_no_reason_to_refuse():
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        out.metadata["title"] = "clip-XX"
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for a in square_frames(4):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    data = buf.getvalue().replace(b"clip-XX", b"clip-\xe9\xff")  # Latin-1 and a byte no encoding has
    assert read_clip(data, frames=2, fps=FPS)[0].shape == (3, 2, H, W)


@pytest.mark.parametrize(
    "limits, kw, match",
    [
        (VideoLimits(max_bytes=1000), {}, r"video is [\d,]+ bytes; this server takes at most 1,000 \(max_bytes\)"),
        (VideoLimits(max_frames=4), {}, r"frames=8; this server samples at most 4 frames \(max_frames\)"),
        (VideoLimits(max_pixels_per_frame=1000), {}, r"176x32 = 5,632 pixels; this server takes at most 1,000"),
        (VideoLimits(max_clip_bytes=100_000), {}, r"8 frames of the MP4 .* are 135,168 bytes decoded; this server "
         r"holds at most 100,000 \(max_clip_bytes\)"),
        (VideoLimits(max_decoded_frames=10), {"clip": 1.0}, r"1 s of the MP4 .* are about 20 frames to decode; this "
         r"server decodes at most 10 \(max_decoded_frames\)"),
        (VideoLimits(max_decode_seconds=0.0), {}, r"decoding the MP4 .* took more than 0 s \(\d+ frames decoded\); "
         r"this server decodes for at most 0 s \(max_decode_seconds\)"),
    ],
)  # fmt: skip
def test_each_cap(limits, kw, match):
    refused(InputTooLarge, made("MP4"), match, limits=limits, **kw)


def test_decoded_frames_are_counted_while_decoding():
    # one keyframe: starting at 1.5 s decodes the 30 frames before it, which the header's estimate cannot know
    data = video("MP4", g="1000")
    refused(InputTooLarge, data, r"needs more than 20 decoded frames for this clip; this server decodes at most 20",
            frames=2, start=1.5, clip=0.1, limits=VideoLimits(max_decoded_frames=20))  # fmt: skip


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"frames": 0}, r"frames must be a whole number of at least 1, got 0"),
        ({"frames": 2.5}, r"frames must be a whole number of at least 1, got 2\.5"),
        ({"start": -1}, r"start must be a number of seconds >= 0, got -1"),
        ({"clip": 0}, r"clip must be a number of seconds > 0, got 0"),
        ({"fps": float("inf")}, r"fps must be > 0, got inf"),
        ({"start": 2.5}, r"start=2\.5 s is past the end of the MP4 \(h264, 176x32, 2 s, 20 fps, [\d,]+ bytes\)"),
    ],
)
def test_bad_options(kw, match):
    refused(InvalidOption, made("MP4"), match, **{"frames": 4, **kw})


# -- the transform -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["R3D_18_Weights.KINETICS400_V1", "MViT_V2_S_Weights.KINETICS400_V1"])
def test_video_transform_equals_torchvisions(weights):
    from torchvision.models import video as tv_video

    family, entry = weights.split(".")
    theirs = getattr(getattr(tv_video, family), entry).transforms()  # VideoClassification (no weights downloaded)
    resize = theirs.resize_size[0] if len(theirs.resize_size) == 1 else tuple(theirs.resize_size)
    ours = video_transform(resize, tuple(theirs.crop_size), theirs.mean, theirs.std, theirs.interpolation.value)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 120, 200, 3), dtype=np.uint8)
    rgb[:, 20:100] = square_frames(8, 200, 80)  # a decoded video: smooth areas and sharp edges
    clip, _ = read_clip(video("MKV", rgb), frames=8, fps=FPS)
    x = ours(clip)
    assert x.shape == (3, 8, *theirs.crop_size) and x.dtype == torch.float32
    assert torch.equal(x, theirs(clip.permute(1, 0, 2, 3)))  # torchvision takes [T, C, H, W]
    assert abs(float(x.mean())) < 3  # normalized


def test_video_transform_wants_a_clip():
    with pytest.raises(InvalidInput, match=r"a clip is \[3, T, H, W\]; got \[3, 8, 8\]"):
        video_transform(16, 8, (0.5,) * 3, (0.5,) * 3)(torch.zeros(3, 8, 8, dtype=torch.uint8))
