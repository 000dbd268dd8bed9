import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizserve import render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape, mode", [((37, 53), "L"), ((29, 41, 3), "RGB"), ((1, 1), "L")])
def test_png_decodes_pixel_for_pixel(shape, mode):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    png = render._png(Image.fromarray(a, mode))
    back = Image.open(io.BytesIO(png))
    back.load()
    assert back.mode == mode and back.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(back), a)


def test_grid_layout_labels_and_scaling():
    tiles = torch.zeros(5, 1, 12, 12)
    tiles[3] = 1.0  # one white tile
    png = render.grid_png(tiles, [str(i) for i in range(5)], "title")
    im = np.asarray(Image.open(io.BytesIO(png)))
    # 12 px tiles are enlarged 4x to 48 px; 3 per row; each cell has a 12 px label band and 2 px padding.
    cell_w, cell_h = 48 + render.PAD, 48 + render.LABEL_H + render.PAD
    assert im.shape == (render.TITLE_H + 2 * cell_h + render.PAD, 3 * cell_w + render.PAD)
    top = render.TITLE_H + cell_h + render.PAD + render.LABEL_H  # second row, below its labels
    assert (im[top : top + 48, render.PAD : render.PAD + 48] == 255).all()  # tile 3: first of row 2
    assert (im[top : top + 48, render.PAD + cell_w : render.PAD + cell_w + 48] == 0).all()  # tile 4
    band = im[render.TITLE_H + render.PAD : render.TITLE_H + render.PAD + render.LABEL_H, render.PAD : cell_w]
    assert (band > 200).any()  # the label '0' is drawn light on the dark band


def test_large_tiles_are_reduced():
    png = render.grid_png(torch.rand(2, 1, 224, 224), ["0", "1"], "t")
    width, height = Image.open(io.BytesIO(png)).size
    assert width == 2 * (render.MAX_TILE + render.PAD) + render.PAD
    assert height == render.TITLE_H + render.LABEL_H + render.MAX_TILE + 2 * render.PAD


def test_npy_bytes_round_trip():
    t = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    a = np.load(io.BytesIO(render.npy_bytes(t)), allow_pickle=False)
    assert a.dtype == np.float32 and a.tolist() == t.tolist()


def test_titles_wrap_to_the_picture_and_end_in_an_ellipsis():
    long = "shapes features.8 feature maps [32, 16, 16], channels 0-31 of 512 shown"
    assert render.title_lines(long, 1000) == [long]
    lines = render.title_lines(long, 200)
    assert len(lines) > 1 and " ".join(lines) == long
    assert all(render._length(line, render._TITLE_FONT) <= 200 for line in lines)
    cut = render.title_lines(" ".join(["word"] * 60), 100)
    assert len(cut) == render.TITLE_LINES and cut[-1].endswith("...")
    assert render.title_lines("x" * 200, 60)[0].endswith("...")  # a word wider than the line is cut
    # a grid of 2 tiles is 100 px wide: its title takes more lines, and the grid moves down by as many
    tiles = torch.zeros(2, 1, 48, 48)
    narrow = np.asarray(Image.open(io.BytesIO(render.grid_png(tiles, ["0", "1"], long))))
    extra = len(render.title_lines(long, narrow.shape[1] - 2 * render.PAD - 2)) - 1
    assert extra >= 2 and narrow.shape[0] == render.TITLE_H + extra * render.TITLE_LINE + render.LABEL_H + 48 + 4
    assert (narrow[: render.TITLE_H + extra * render.TITLE_LINE] > 200).any()  # text pixels in the title band


def attribution(where, **kw):
    rgb = torch.stack([torch.linspace(0, 1, 64).expand(64, 64)] * 3)  # a grey ramp, left to right
    image, heatmap = render.attribution_pngs(rgb, where, title="t", **kw)
    return np.asarray(Image.open(io.BytesIO(image))), np.asarray(Image.open(io.BytesIO(heatmap))), rgb


def test_attribution_pictures_input_beside_overlay_and_a_colour_bar():
    where = torch.linspace(0, 1, 64).expand(64, 64).T.contiguous()  # 0 at the top, 1 at the bottom
    image, heatmap, rgb = attribution(where, ticks=("0", "3.2e-02"))
    side, top = 256, render.TITLE_H  # 64 px enlarged 4x
    assert image.shape == (top + side + render.BAR_BAND, 2 * side + render.GAP, 3)
    assert (image[:top] > 200).any() and (image[:top] < 40).any()  # light text on the dark title band
    inputs = image[top : top + side, :side]
    assert np.array_equal(inputs[::4, ::4], (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    bar = image[top + side + 6 + render.BAR_H // 2, render.PAD : image.shape[1] - render.PAD]
    jet = render.colour_table("jet")
    assert tuple(bar[0]) == tuple(jet[0]) == (0, 0, 128) and tuple(bar[-1]) == tuple(jet[255]) == (128, 0, 0)
    assert (image[-12:, :12] > 120).any() and (image[-12:, -40:] > 120).any()  # the tick labels, both ends
    assert tuple(heatmap[top, 0]) == tuple(jet[0]) and tuple(heatmap[top + side - 1, 0]) == tuple(jet[255])


def test_opacity_zero_is_the_input_and_one_the_map():
    where = torch.rand(64, 64)
    image, heatmap, _ = attribution(where, ticks=("0", "1"), opacity=0.0)
    top, side = render.TITLE_H, 256
    assert np.array_equal(image[top : top + side, side + render.GAP :], image[top : top + side, :side])
    image, heatmap, _ = attribution(where, ticks=("0", "1"), opacity=1.0, colormap="viridis")
    overlay = image[top : top + side, side + render.GAP :]
    assert np.array_equal(overlay, heatmap[top : top + side])
    assert np.array_equal(overlay[::4, ::4], render.colour_table("viridis")[(where * 255).round().long().numpy()])


def test_a_diverging_bar_is_white_in_the_middle_blue_below_red_above():
    where = torch.full((64, 64), 0.5)
    where[:, :16], where[:, -16:] = 0.0, 1.0  # -max at the left, +max at the right, 0 between
    image, heatmap, _ = attribution(where, ticks=("-1", "0", "+1"), colormap=render.DIVERGING)
    top, side = render.TITLE_H, 256
    bar = image[top + side + 6 + render.BAR_H // 2, render.PAD : image.shape[1] - render.PAD]
    assert (bar[len(bar) // 2] > 240).all()  # white at 0
    assert bar[0][2] > bar[0][0] + 50 and bar[-1][0] > bar[-1][2] + 50  # blue at -max, red at +max
    mid = image[top + side + 6 + render.BAR_H : top + side + 6 + render.BAR_H + 3, image.shape[1] // 2 - 2 :]
    assert (mid[:, :5] > 200).any()  # the mark of the middle tick
    row = heatmap[top + 8]
    assert row[8][2] > row[8][0] + 50 and (row[128] > 240).all() and row[-8][0] > row[-8][2] + 50


def test_a_clip_shows_each_row_of_inputs_above_its_row_of_overlays():
    rgb = torch.rand(3, 2, 56, 56)  # two frames of 56 px: a clip's frames are enlarged 2x to 112 (MIN_FRAME)
    image, heatmap = render.attribution_pngs(rgb, torch.rand(2, 56, 56), title="t", ticks=("0", "1"))
    image = np.asarray(Image.open(io.BytesIO(image)))
    assert image.shape == (render.TITLE_H + 112 + render.PAD + 112 + render.BAR_BAND, 2 * 112 + render.PAD, 3)
    assert np.array_equal(image[: render.TITLE_H], render._title_band("t; 2 frames, time to the right", 226))
    first = (rgb[:, 0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(image[render.TITLE_H : render.TITLE_H + 112 : 2, :112:2], first)
    wide = render.attribution_pngs(torch.rand(3, 8, 56, 56), torch.rand(8, 56, 56), title="t", ticks=("0", "1"))[0]
    bar = np.asarray(Image.open(io.BytesIO(wide)))[-render.BAR_BAND + 6 + render.BAR_H // 2]
    assert bar.shape[0] == 8 * 112 + 7 * render.PAD > render.MAX_BAR  # 8 frames: one row of 910 px
    assert tuple(bar[render.MAX_BAR - render.PAD - 1]) == (128, 0, 0)  # the bar's red end
    assert (bar[render.MAX_BAR :] == round(render.BACKGROUND * 255)).all()  # a wide picture's bar stays at most MAX_BAR


def test_strip_shape_wraps_a_clip_into_rows():
    assert render.strip_shape(16, 64, 64) == (2, 8, 128, 128)  # motion_viz: 2 rows of 8 frames, 1,038 px wide
    assert render.strip_shape(16, 112, 112) == (2, 8, 112, 112)  # R3D-18: 910 px wide
    assert render.strip_shape(10, 64, 64) == (2, 5, 128, 128)  # evened out: 5 and 5, not 8 and 2
    assert render.strip_shape(128, 224, 224) == (32, 4, 224, 224)  # S3D: 4 frames of 224 px fit in MAX_STRIP
    assert render.strip_shape(3, 2, 3) == (1, 3, 112, 168)
    assert render.strip_shape(1, 64, 64) == (1, 1, 256, 256)  # an image: MIN_PICTURE
    for frames, h, w in ((16, 64, 64), (16, 112, 112), (128, 224, 224), (64, 7, 300)):
        rows, columns, fh, fw = render.strip_shape(frames, h, w)
        assert rows * columns >= frames and columns * fw + (columns - 1) * render.PAD <= max(render.MAX_STRIP, fw)


def title_text_height(band: np.ndarray) -> int:
    """Rows of a title band from the top of its text to the bottom (text is light on the dark band)."""
    rows = np.nonzero((band > 128).any(axis=tuple(range(1, band.ndim))))[0]
    return int(rows[-1] - rows[0] + 1)


def test_sixteen_frames_of_a_clip_are_two_rows_under_a_readable_title():
    """16 frames of 64 px (motion_viz) were one strip 4,126 px wide: a page fitting it to 1,280 px showed its 13 px
    title 4 px high. Now 2 rows of 8 frames of 128 px, 1,038 px wide: shown at its own size, the title's text is
    the font's height."""
    rgb, where = torch.rand(3, 16, 64, 64), torch.rand(16, 64, 64)
    title = "gradcam of features - right 1.00"
    image, heatmap = render.attribution_pngs(rgb, where, title=title, ticks=("0", "1"))
    image, heatmap = (np.asarray(Image.open(io.BytesIO(p))) for p in (image, heatmap))
    width = 8 * 128 + 7 * render.PAD
    assert width == 1038 <= render.MAX_STRIP
    pair = 128 + render.PAD + 128  # a row of input frames above its row of overlays
    assert image.shape == (render.TITLE_H + pair + render.GAP + pair + render.BAR_BAND, width, 3)
    assert heatmap.shape == (render.TITLE_H + 128 + render.PAD + 128 + render.BAR_BAND, width, 3)
    band = image[: render.TITLE_H]
    assert np.array_equal(band, render._title_band(f"{title}; 16 frames, time to the right, 8 a row", width))
    assert title_text_height(band) >= 11  # 'g' to the top of 'd' at 13 px
    second = render.TITLE_H + pair + render.GAP  # frame 8 starts the second row of inputs
    frame8 = (rgb[:, 8].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(image[second : second + 128 : 2, :128:2], frame8)
    assert (image[second + 128 + render.PAD :][:128, -128:] != _BG).any()  # frame 15's overlay, last of row 2
    # image_png and map_png wrap the same way
    strip = np.asarray(Image.open(io.BytesIO(render.image_png(rgb, "preferred video"))))
    assert strip.shape[1] == width and strip.shape[0] == render.TITLE_H + 2 * 128 + render.PAD


_BG = round(render.BACKGROUND * 255)


def test_a_signed_map_stands_out_over_a_photo_and_keeps_it():
    """A signed map over a photo (docs/grace_hopper.jpg), spiky as pixel attributions are (a blob for, one against,
    times heavy-tailed noise): the overlay saliency's signed maps get (shared.OVERLAYS) shows the map 6x further
    from no evidence than the even blend at 0.5 it replaced, and keeps most of the photo's contrast where that one
    washed out more than half of it (tests/contrast.py)."""
    from tests.contrast import overlay_contrast
    from vizserve.modes.shared import OVERLAYS

    photo = Image.open(ROOT / "docs" / "grace_hopper.jpg").convert("RGB").resize((224, 224), Image.BILINEAR)
    rgb = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
    y, x = np.mgrid[0:224, 0:224] / 224

    def blob(cx: float, cy: float, size: float):
        return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / size)

    envelope = blob(0.5, 0.35, 0.02) - 0.6 * blob(0.5, 0.8, 0.01)  # for the class on the face, against it below
    heat = envelope * np.abs(np.random.default_rng(0).laplace(size=(224, 224)))
    where = torch.from_numpy(0.5 + 0.5 * heat / np.abs(heat).max()).float()
    blend, opacity = OVERLAYS["signed"]
    assert blend == "magnitude"

    def contrast(blend, opacity):
        png = render.attribution_pngs(rgb, where, title="t", ticks=("-1", "0", "+1"), colormap=render.DIVERGING,
                                      opacity=opacity, blend=blend, signed=True)[0]  # fmt: skip
        image = np.asarray(Image.open(io.BytesIO(png)))
        top = image.shape[0] - render.BAR_BAND - 224
        left, right = image[top : top + 224, :224], image[top : top + 224, 224 + render.GAP :]
        assert np.array_equal(left, render._to_uint8(rgb))  # the photo itself beside its overlay
        null = render._overlay(rgb, torch.full_like(where, 0.5), render.DIVERGING, opacity, blend, True)
        return overlay_contrast(left, render._to_uint8(null), right, where.numpy(), signed=True)

    now, before = contrast(blend, opacity), contrast("even", 0.5)
    assert now["map_shown"] >= 12 and now["photo_kept"] >= 0.7, now  # measured: 17.4 and 0.93
    assert before["map_shown"] < 12 and before["photo_kept"] < 0.5, before  # measured: 2.9 and 0.44
