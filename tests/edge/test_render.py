import io

import numpy as np
import pytest
import torch
from PIL import Image

from vizserve import render


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
