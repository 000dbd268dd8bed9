import pytest
import torch

from cnnviz import SALIENCY_METHODS, attribution_map, deconv_projection, saliency
from tests.tiny import Tiny, tiny_input


def test_vanilla_gradient_by_hand():
    # d logit0 / d x: each conv window adds 0.5 to the 4 pixels it covers (conv weights 1, pool averages 2 places).
    attr = saliency(Tiny(), tiny_input(), torch.tensor([0]), "vanilla")
    assert attr[0].tolist() == [[[0.5, 1.0, 0.5], [0.5, 1.0, 0.5]]] * 3
    assert attribution_map(attr, "vanilla")[0].tolist() == [[0.5, 1.0, 0.5], [0.5, 1.0, 0.5]]


def test_smoothgrad_without_noise_is_the_gradient():
    x = tiny_input()
    plain = saliency(Tiny(), x, torch.tensor([0]), "vanilla")
    smooth = saliency(Tiny(), x, torch.tensor([0]), "smoothgrad", noise=0.0, samples=4)
    assert torch.allclose(plain, smooth)


def test_integrated_gradients_completeness():
    # Attributions sum to f(x) - f(baseline) = 13 - 0 for class 0 from a zero baseline.
    attr = saliency(Tiny(), tiny_input(), torch.tensor([0]), "integrated_gradients", steps=128)
    assert attr.sum().item() == pytest.approx(13.0, rel=0.02)


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_every_method_gives_a_map_and_leaves_no_hooks(method):
    model = Tiny()
    attr = saliency(model, tiny_input().repeat(2, 1, 1, 1), torch.tensor([0, 1]), method, samples=2, steps=4)
    assert attr.shape == (2, 3, 2, 3)
    assert (attribution_map(attr, method) >= 0).all()
    assert all(not (m._forward_hooks or m._backward_hooks or m._forward_pre_hooks) for m in model.modules())


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        saliency(Tiny(), tiny_input(), torch.tensor([0]), "lime")


def test_deconvnet_projection_by_hand():
    # Channel 0's rectified map [11, 15] goes down through the transposed convolution (all-ones 2x2 kernels):
    # each pixel gets the sum of the map values whose windows cover it: [11, 26, 15] on both rows, every channel.
    projection, channels, peaks = deconv_projection(Tiny(), tiny_input(), "features.0", torch.tensor([0]))
    assert projection[0].tolist() == [[[11.0, 26.0, 15.0], [11.0, 26.0, 15.0]]] * 3
    assert channels.tolist() == [0] and peaks.tolist() == [15.0]


def test_deconvnet_default_channel_is_the_most_active():
    _, channels, peaks = deconv_projection(Tiny(), tiny_input(), "features.0")
    assert channels.tolist() == [0] and peaks.tolist() == [15.0]
