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


def test_preferred_video_of_a_class_raises_its_score_and_has_the_clip_shape():
    from cnnviz import Settings, Target, actmax

    result = actmax(Tiny3D(), [Target("", 0)], Settings(size=8, frames=4, steps=24, lr=0.1, transforms=True,
                                                        time_jitter=1))  # fmt: skip
    assert result.images.shape == (1, 3, 4, 8, 8) and 0 <= result.images.min() and result.images.max() <= 1
    assert result.start[0] < -0.2 and result.end[0] > -0.05  # log-probability: p from about 0.7 to above 0.95


def test_the_temporal_regularizer_makes_frames_change_less():
    from cnnviz import Settings, Target, actmax
    from cnnviz.actmax import _temporal_variation

    def change(tv_time):
        cfg = Settings(size=8, frames=4, steps=40, lr=0.1, param="pixel", init_noise=0.5, tv_time=tv_time)
        return float(_temporal_variation(actmax(Tiny3D(), [Target("features.0", 0)], cfg).images)[0])

    free, smooth = change(0.0), change(100.0)
    assert smooth < 0.5 * free, (free, smooth)


def test_video_transforms_move_every_frame_alike_and_shift_time_circularly():
    from cnnviz.actmax import robustness_transforms

    x = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 3, 6, 32, 32).clone() / 10  # frame t is t / 10 everywhere
    out = robustness_transforms(32, torch.Generator().manual_seed(3), time_jitter=2)(x)
    means = out[0, 0].mean(dim=(1, 2))  # the same spatial draw on every frame: the grey padding weighs alike
    order = [round(float(v), 4) for v in (means - means.min()) / (means.max() - means.min()) * 5]
    shifts = [(i - order.index(0.0)) % 6 for i in range(6)]
    assert sorted(order) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and order == [float(s) for s in shifts]
    assert order.index(0.0) in (0, 1, 2, 4, 5)  # a shift of at most 2 frames either way


def test_fft_video_parameterization():
    from cnnviz.actmax import fft_image

    params, image = fft_image(2, 16, frames=8, generator=torch.Generator().manual_seed(0))
    assert params[0].shape == (2, 3, 8, 16, 9, 2) and image().shape == (2, 3, 8, 16, 16)
    assert 0 < image().min() and image().max() < 1
