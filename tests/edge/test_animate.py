"""Animations and strips of frames: each format decodes back (Pillow for WebP, APNG and GIF; PyAV for MP4) to the
frames given, exactly where the format is lossless and within a measured tolerance where it is not."""

import io

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from cnnviz import InvalidOption
from tests.images import photo
from vizserve import animate, render
from vizserve.animate import animation, strip_png

T = 6


def heat_frames(h: int = 28, w: int = 36) -> torch.Tensor:
    """A blob moving right, in the jet colour map as the attribution pictures draw it: ``[T, 3, h, w]``."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    heat = torch.stack([torch.exp(-((x - 0.2 - 0.1 * t) ** 2 + (y - 0.5) ** 2) / 0.02) for t in range(T)])
    jet = torch.from_numpy(render.colour_table("jet")).float() / 255
    return jet[(heat * 255).round().long()].permute(0, 3, 1, 2)


def photo_frames(side: int = 56) -> torch.Tensor:
    """A photo scrolling right and brightening: far more than 256 colours per frame."""
    base = torch.from_numpy(np.array(photo(side, side))).float().permute(2, 0, 1) / 255
    return torch.stack([torch.roll(base, 3 * t, dims=2) * 0.7 + 0.05 * t for t in range(T)]).clamp(0, 1)


def expected(frames: torch.Tensor) -> np.ndarray:
    """What the animation should show: uint8 ``[T, H, W, 3]`` enlarged by the whole factor render uses."""
    a = (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    k = -(-render.MIN_PICTURE // min(a.shape[1:3]))
    return a.repeat(k, axis=1).repeat(k, axis=2)


def decoded(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "mp4":
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == {"webp": "WEBP", "apng": "PNG", "gif": "GIF"}[fmt]
        assert im.info["loop"] == 0  # forever
        frames, delays = [], []
        for frame in ImageSequence.Iterator(im):
            frames.append(np.asarray(frame.convert("RGB")))
            delays.append(frame.info["duration"])
        assert delays == [pytest.approx(125, abs=5)] * len(frames)  # 8 fps; GIF's delays are whole 1/100 s
        return np.stack(frames)


# Measured here (PyAV 18.1, Pillow 13): GIF on the photo, mean 2.5 and max 10 (the heatmap: exact); MP4 (yuv420p
# halves colour resolution, so the jet map's sharp edges suffer), mean 0.8-1.5 and 99th percentile 5-12.
TOLERANCE = {"webp": (0, 0), "apng": (0, 0), "gif": (3.0, 16), "mp4": (2.0, 16)}


@pytest.mark.parametrize("fmt", ["webp", "apng", "gif", "mp4"])
@pytest.mark.parametrize("frames", [heat_frames(), photo_frames()], ids=["heatmap", "photo"])
def test_each_format_decodes_back_to_the_frames(fmt, frames):
    data, content_type = animation(frames, fmt, fps=8)
    assert content_type == {"webp": "image/webp", "apng": "image/apng", "gif": "image/gif", "mp4": "video/mp4"}[fmt]
    want = expected(frames)
    got = decoded(data, fmt)
    assert got.shape == want.shape  # T frames, enlarged to at least 224 px on the short side
    assert min(want.shape[1:3]) >= 224
    diff = np.abs(got.astype(int) - want.astype(int))
    mean, top = TOLERANCE[fmt]
    if fmt == "gif" and frames.shape[2] == 28:
        mean = top = 0  # a heatmap has fewer than 256 colours: GIF's palette holds them exactly
    assert diff.mean() <= mean
    assert (np.percentile(diff, 99) if fmt == "mp4" else diff.max()) <= top


def test_mp4_pads_odd_sides_to_even():
    frames = heat_frames(75, 75)  # enlarged 3x: 225 x 225, odd
    got = decoded(animation(frames, "mp4", fps=12.5)[0], "mp4")
    assert got.shape == (T, 226, 226, 3)
    want = expected(frames)
    assert np.abs(got[:, :225, :225].astype(int) - want.astype(int)).mean() < 2


def test_mp4_frame_rate_and_frame_count():
    data, _ = animation(heat_frames(), "mp4", fps=15)
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(15)
        assert stream.frames == T


def test_mp4_without_an_encoder_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(animate, "h264_encoder", lambda: None)
    with pytest.raises(InvalidOption, match=r"format=mp4 needs an H\.264 encoder \(libx264 or libopenh264\)"):
        animation(heat_frames(), "mp4")


def test_pyav_has_the_h264_encoder():
    assert animate.h264_encoder() == "libx264"


@pytest.mark.parametrize(
    "fmt, fps, match",
    [("avi", 8, r"format='avi' is not an animation format; use one of webp, apng, gif, mp4"),
     ("webp", 0, r"fps must be within 0 \.\. 60"), ("gif", 61, r"fps must be within"),
     ("apng", float("nan"), r"fps must be within")],
)  # fmt: skip
def test_bad_format_or_rate(fmt, fps, match):
    with pytest.raises(InvalidOption, match=match):
        animation(heat_frames(), fmt, fps=fps)


def test_large_frames_are_not_enlarged():
    frames = torch.rand(2, 3, 240, 320)
    got = decoded(animation(frames, "apng", fps=8)[0], "apng")
    assert got.shape == (2, 240, 320, 3)


def test_strip_is_a_grid_of_rows():
    frames = heat_frames()
    data = strip_png(frames, title="t = 0..5")
    assert data == render.grid_png(frames, [str(k) for k in range(T)], "t = 0..5", nrow=T)
    with Image.open(io.BytesIO(data)) as im:
        tile_w = 36 * 2  # 36 px frames are enlarged 2x (render's MIN_TILE is 48)
        assert im.size == (
            T * (tile_w + render.PAD) + render.PAD,
            render.TITLE_H + 2 * render.PAD + render.LABEL_H + 56,
        )
    labelled = strip_png(frames, labels=[f"{k / 8:.2f} s" for k in range(T)])
    assert labelled != data
    with pytest.raises(ValueError, match="5 labels for 6 frames"):
        strip_png(frames, labels=["a"] * 5)
    sixteen = torch.cat([frames] * 3)[:16]  # 16 frames wrap into 2 rows of 8, as a clip's pictures do
    assert strip_png(sixteen) == render.grid_png(sixteen, [str(k) for k in range(16)], "", nrow=8)
    with Image.open(io.BytesIO(strip_png(sixteen))) as im:
        assert im.size == (8 * (tile_w + render.PAD) + render.PAD, 2 * (56 + render.LABEL_H + render.PAD) + render.PAD)
