"""The core on 5-D inputs ``[N, C, T, H, W]``: the same code as for images, checked by hand on Tiny3D."""

import pytest
import torch

from cnnviz import GradCAM, GradCAMPlusPlus, LayerTable, attribution_map, featuremap_tiles, forward, saliency
from tests.tiny import Tiny3D, tiny_clip


def test_layer_table_reads_feature_maps_over_time():
    table = LayerTable(Tiny3D(), (3, 2, 2, 3))
    assert [i.as_dict() for i in table][:3] == [
        {"name": "features", "type": "Sequential", "output_shape": [2, 2, 1, 2]},
        {"name": "features.0", "type": "Conv3d", "output_shape": [2, 2, 1, 2]},
        {"name": "features.1", "type": "ReLU", "output_shape": [2, 2, 1, 2]},
    ]
    assert table.conv_names == ["features.0"] and table.cam_layer == "features"
    assert table.resolve(["features.1"], need="spatial") == ["features.1"]


def test_capture_keeps_the_pre_relu_maps_of_every_frame():
    probs, acts = forward(Tiny3D(), tiny_clip(), ["features.0"])
    assert acts["features.0"][0].tolist() == [[[[11.0, 15.0]], [[23.0, 31.0]]], [[[-12.0, -16.0]], [[-24.0, -32.0]]]]
    assert probs.argmax(1).tolist() == [0]


def test_gradcam_over_time_by_hand():
    # Class 0 = mean over 4 positions of relu(A0): G0 = 1/4 everywhere, w = (1/4, 0); cam = A0 / 4 =
    # [[2.75, 3.75]], [[5.75, 7.75]]; trilinear to [2, 2, 3]: frames stay, rows repeat, columns [a, (a+b)/2, b].
    result = GradCAM(Tiny3D(), "features.0")(tiny_clip(), torch.tensor([0]))
    assert result.cams.shape == (1, 2, 2, 3)
    assert result.cams[0].tolist() == [[[2.75, 3.25, 3.75]] * 2, [[5.75, 6.75, 7.75]] * 2]
    assert result.peaks.tolist() == [7.75]


def test_gradcam_plus_plus_weights_sum_over_time_too():
    # G0 = 1/4, sum A0 = 80: alpha = (1/16) / (2/16 + 80/64) = 1/22, w0 = 4 positions * (1/22) * (1/4) = 1/22.
    result = GradCAMPlusPlus(Tiny3D(), "features.0")(tiny_clip(), torch.tensor([0]))
    expected = [11 / 22, 13 / 22, 15 / 22, 23 / 22, 27 / 22, 31 / 22]
    assert result.cams[0, :, 0].flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_vanilla_gradient_of_a_clip_by_hand():
    # d logit0 / dx[c, t, h, w] = 1/4 * (windows of frame t covering column w): [1, 2, 1] / 4 on every row.
    x = tiny_clip()
    grads = saliency(Tiny3D(), x, torch.tensor([0]), "vanilla")
    assert grads.shape == x.shape
    assert grads[0, 1].tolist() == [[[0.25, 0.5, 0.25]] * 2] * 2
    assert attribution_map(grads, "vanilla")[0].tolist() == [[[0.25, 0.5, 0.25]] * 2] * 2


def test_featuremap_tiles_of_a_clip_scale_each_channel_over_all_frames():
    fmap = torch.tensor([[[[11.0, 15.0]], [[23.0, 31.0]]], [[[-12.0, -16.0]], [[-24.0, -32.0]]]])
    tiles, idx = featuremap_tiles(fmap)
    assert idx == [0, 1] and tiles.shape == (2, 1, 2, 1, 2)
    assert tiles[0, 0].flatten().tolist() == pytest.approx([0.0, 0.2, 0.6, 1.0])
