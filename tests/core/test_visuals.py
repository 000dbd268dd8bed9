import pytest
import torch

from cnnviz import diverging, featuremap_tiles, kernel_matrix, rgb_filter_tiles, select_channels


def test_featuremap_tiles_per_channel_and_dead_channel_black():
    fmap = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    tiles, idx = featuremap_tiles(fmap, channels=None)
    assert idx == [0, 1]
    assert tiles.shape == (2, 1, 2, 2)
    assert tiles[0, 0].flatten().tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert tiles[1].abs().sum() == 0


def test_featuremap_tiles_layer_scale_uses_all_channels_even_unshown():
    fmap = torch.tensor([[[0.0, 1.0]], [[0.0, 4.0]]])
    tiles, idx = featuremap_tiles(fmap, channels=1, normalize="layer")
    assert idx == [0]
    assert tiles[0, 0, 0].tolist() == [0.0, 0.25]


def test_featuremap_tiles_checks_shape_and_normalize():
    with pytest.raises(ValueError, match=r"expected a feature map \[C, H, W\] or \[C, T, H, W\], got shape \[2, 2\]"):
        featuremap_tiles(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="normalize must be"):
        featuremap_tiles(torch.zeros(1, 2, 2), normalize="global")


def test_rgb_filters_scaled_per_filter():
    weight = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 2.0, 4.0]]).reshape(2, 3, 1, 1)
    tiles, idx = rgb_filter_tiles(weight, channels=64)
    assert idx == [0, 1]
    assert tiles[:, :, 0, 0].tolist() == [[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]


def test_diverging_colours():
    got = diverging(torch.tensor([-1.0, 0.0, 1.0, 0.5, 3.0]))
    assert got.tolist() == [[0, 0, 1], [1, 1, 1], [1, 0, 0], [1, 0.5, 0.5], [1, 0, 0]]


def test_kernel_matrix_symmetric_scale():
    weight = torch.tensor([[2.0, -1.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    cells, rows, cols = kernel_matrix(weight, 2, 1)
    assert rows == [0, 1] and cols == [0]
    assert cells.shape == (2, 1, 3, 1, 1)
    assert cells[:, 0, :, 0, 0].tolist() == [[1, 0, 0], [1, 1, 1]]  # 2/2 = +1 red; 0 white


def test_select_channels():
    assert select_channels(5, 3) == [0, 1, 2]
    assert select_channels(2, 64) == [0, 1]
    assert select_channels(3, None) == [0, 1, 2]
