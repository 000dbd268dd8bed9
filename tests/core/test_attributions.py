import re
import warnings

import pytest
import torch
from captum.attr import DeepLift
from torch import nn

from cnnviz import (
    SALIENCY_METHODS,
    SIGNED_METHODS,
    InputTooLarge,
    attribution_map,
    deconv_projection,
    lrp_problem,
    perturbations,
    saliency,
)
from tests.tiny import Tiny, Tiny3D, TinyLinear, linear_input, linear_weight, tiny_clip, tiny_input


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
    attrs = {name: dict(m.__dict__) for name, m in model.named_modules()}
    attr = saliency(model, tiny_input().repeat(2, 1, 1, 1), torch.tensor([0, 1]), method, samples=2, steps=4)
    assert attr.shape == (2, 3, 2, 3)
    heat = attribution_map(attr, method)
    if method in SIGNED_METHODS:  # the sign kept: channels summed (perturbations: every channel holds the drop)
        assert torch.allclose(heat, attr.mean(1) if method in ("occlusion", "feature_ablation") else attr.sum(1))
    else:
        assert (heat >= 0).all()
    assert all(not (m._forward_hooks or m._backward_hooks or m._forward_pre_hooks) for m in model.modules())
    assert {name: dict(m.__dict__) for name, m in model.named_modules()} == attrs  # no modules swapped or added


# -- linear model: every method is W * (x - baseline), summed over what it removes -------------------------------

CONTRIBUTION = torch.tensor([[3.0, 0.0, 5.0], [6.0, 7.0, -4.0]])  # from a zero baseline (tests/tiny.py)
CONTRIBUTION_FROM_MINUS_1 = torch.tensor([[13.0, 8.0, 15.0], [16.0, 17.0, 4.0]])


def linear(method, target=0, **kw):
    return saliency(TinyLinear(), linear_input(), torch.tensor([target]), method, **kw)


@pytest.mark.parametrize("method", ["input_x_gradient", "deeplift", "lrp"])
def test_linear_model_gradient_methods_by_hand(method):
    attr = linear(method)
    assert torch.allclose(attr[0], linear_weight() * linear_input()[0])
    assert torch.allclose(attribution_map(attr, method)[0], CONTRIBUTION)
    assert torch.allclose(linear(method, target=1)[0], -attr[0])  # class 1 is minus class 0


@pytest.mark.parametrize("method", ["deeplift", "deepliftshap", "gradientshap", "integrated_gradients"])
def test_linear_model_methods_with_a_baseline_by_hand(method):
    # Without noise the SHAP methods' baselines are all the one baseline: W * (x - b) exactly, whatever the draw.
    attr = linear(method, baseline=torch.full((1, 3, 1, 1), -1.0), noise=0.0, samples=5, steps=2)
    assert torch.allclose(attr[0], linear_weight() * (linear_input()[0] + 1), atol=1e-5)
    assert torch.allclose(attribution_map(attr, method)[0], CONTRIBUTION_FROM_MINUS_1, atol=1e-5)


def test_shap_baselines_are_drawn_around_the_baseline():
    # With noise each baseline differs: the attribution is W * (x - mean of the baselines drawn), not W * (x - b).
    exact = linear_weight() * (linear_input()[0] + 1)
    minus_1 = torch.full((1, 3, 1, 1), -1.0)
    drawn = linear("deepliftshap", baseline=minus_1, noise=0.5, samples=64)
    assert not torch.allclose(drawn[0], exact, atol=1e-3)
    # the noise is a fraction 0.5 of the input range 7: sd 3.5, so the mean of 64 baselines is within 3.5 of -1
    assert ((drawn[0] - exact) / linear_weight()).abs().max() < 3.5
    assert torch.equal(drawn, linear("deepliftshap", baseline=minus_1, noise=0.5, samples=64))  # seeded


def test_occlusion_by_hand():
    # 1-pixel patches (half the short side 2, rounded): each pixel's drop is its own contribution.
    assert torch.allclose(attribution_map(linear("occlusion", window=0.5, stride=1.0), "occlusion")[0], CONTRIBUTION)
    # 2 x 2 patches 1 pixel apart: columns 0-1 (3 + 0 + 6 + 7 = 16) and 1-2 (0 + 5 + 7 - 4 = 8); the middle column
    # is covered by both and gets their mean; every channel holds the same drop.
    attr = linear("occlusion", window=1.0, stride=0.5)
    assert attr[0].tolist() == [[[16.0, 12.0, 8.0]] * 2] * 3
    # from a baseline of -1 the drops are those of the contributions from -1
    from_minus_1 = linear("occlusion", window=0.5, baseline=torch.full((1, 3, 1, 1), -1.0))
    assert torch.allclose(attribution_map(from_minus_1, "occlusion")[0], CONTRIBUTION_FROM_MINUS_1)


def test_feature_ablation_by_hand():
    assert torch.allclose(attribution_map(linear("feature_ablation", window=0.5), "feature_ablation")[0], CONTRIBUTION)
    # a grid of 2 x 2 cells: columns 0-1 (16) and column 2, cut by the edge (5 - 4 = 1)
    attr = linear("feature_ablation", window=1.0)
    assert attr[0].tolist() == [[[16.0, 16.0, 1.0]] * 2] * 3


def test_occlusion_of_a_clip_is_a_tube_over_its_frames():
    # Tiny3D: logit 0 is the mean of the 4 windows' sums - 1 (frame 1 is twice frame 0). Covering pixel (h, w) of
    # channel 0 in both frames lowers each window that holds it by x + 2x: the logit by 3x / 4 per window.
    attr = saliency(Tiny3D(), tiny_clip(), torch.tensor([0]), "occlusion", window=0.5)
    cover = torch.tensor([1.0, 2.0, 1.0])
    x0 = tiny_clip()[0, 0, 0]
    expected = 0.75 * cover * x0
    assert torch.allclose(attribution_map(attr, "occlusion")[0], expected.expand(2, 2, 3))


def test_perturbation_count_is_what_captum_runs():
    x = torch.rand(1, 3, 5, 7)
    # 3 px patches (0.6 x 5) every 3 px: rows 0, 2 (the last cut to the edge), columns 0, 3, 4 -> 2 x 3
    assert perturbations("occlusion", x.shape[2:], window=0.6, stride=1.0) == 6
    assert perturbations("feature_ablation", x.shape[2:], window=0.6) == 2 * 3
    assert perturbations("occlusion", (224, 224)) == 15 * 15  # 28 px patches every 14 px
    assert perturbations("feature_ablation", (224, 224)) == 8 * 8
    assert perturbations("occlusion", (16, 112, 112)) == 15 * 15  # a clip: one tube of all 16 frames
    assert perturbations("vanilla", (224, 224)) == 0
    rows = []
    model = Tiny()
    model.register_forward_hook(lambda m, a, o: rows.append(len(a[0])))
    for method in ("occlusion", "feature_ablation"):
        rows.clear()
        saliency(model, x, torch.tensor([0]), method, window=0.6, stride=1.0)
        assert sum(rows) == 1 + 6  # the input itself, then one row per patch


def test_over_the_cap_is_refused_before_any_pass():
    model = Tiny()
    calls = []
    model.register_forward_hook(lambda m, a, o: calls.append(1))
    with pytest.raises(InputTooLarge, match=r"occlusion of a 5x7 input with 1 px patches every 1 px takes 35 "
                       r"forward passes; this server makes at most 34 an input \(max_perturbations\)"):  # fmt: skip
        saliency(model, torch.rand(1, 3, 5, 7), torch.tensor([0]), "occlusion", window=0.1, max_perturbations=34)
    assert calls == []


# -- noise: SmoothGrad's variants against their definitions -----------------------------------------------------


class HalfSquare(nn.Module):
    """Class 0 is ``sum(x^2) / 2`` (its gradient is ``x`` itself), class 1 is 0."""

    def forward(self, x):
        half = (x**2).flatten(1).sum(1) / 2
        return torch.stack([half, torch.zeros_like(half)], 1)


def test_smoothgrad_sq_and_vargrad_by_their_definitions():
    # The gradient at x + e is x + e: smoothgrad_sq = mean (x + e)^2 and vargrad = its variance over the samples,
    # so that smoothgrad_sq - vargrad = (x + mean e)^2. The noise is seeded: both draw the same samples.
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0] = torch.linspace(0, 1, 64).view(8, 8)  # range 1: noise 0.5 is sd 0.5
    sq, var = (saliency(HalfSquare(), x, torch.tensor([0]), m, samples=64, noise=0.5) for m in ("smoothgrad_sq",
                                                                                               "vargrad"))  # fmt: skip
    assert var.mean().item() == pytest.approx(0.25 * 63 / 64, rel=0.06)  # sd 0.5; the population variance of 64
    assert (sq - var).mean().item() == pytest.approx((x**2).mean().item() + 0.25 / 64, abs=0.01)
    assert ((sq - var).sqrt() - x).abs().max() < 0.3  # |mean e| of 64 samples of sd 0.5, for all 192 pixels
    assert torch.equal(var, saliency(HalfSquare(), x, torch.tensor([0]), "vargrad", samples=64, noise=0.5))
    assert torch.allclose(attribution_map(var, "vargrad")[0], var[0].amax(0))


# -- DeepLift with in-place and shared ReLUs; LRP's limits ------------------------------------------------------


def test_deeplift_by_hand_through_an_inplace_relu():
    # From a zero baseline Tiny's conv channel 0 goes from -1 (ReLU: 0) to [11, 15]: the rescale rule's multipliers
    # are 11/12 and 15/16 (the gradient would be 1). Each window adds 0.5 x multiplier to the pixels it covers.
    attr = saliency(Tiny(), tiny_input(), torch.tensor([0]), "deeplift")
    per_column = torch.tensor([11 / 24, 11 / 24 + 15 / 32, 15 / 32])
    assert torch.allclose(attr[0, 0], tiny_input()[0, 0] * per_column)
    assert attr[0, 1:].abs().max() == 0
    assert attr.sum().item() == pytest.approx(13.0)  # summation to delta: f(x) - f(0) = 13 - 0


class SharedReLU(nn.Module):
    """conv -> relu -> 1x1 conv -> the same relu -> pool -> fc, as ResNet's blocks call their one ``relu`` twice;
    ``shared=False``: the same network with a ReLU for each call."""

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.mix = nn.Conv2d(3, 4, 2), nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = self.relu if shared else nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.eval()

    def forward(self, x):
        return self.fc(self.relu2(self.mix(self.relu(self.conv(x)))).mean((2, 3)))


def test_deeplift_on_a_model_that_reuses_its_relu():
    x, base = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1)), torch.full((1, 3, 1, 1), -1.0)
    model = SharedReLU()
    with pytest.raises(RuntimeError, match="used more than once"), warnings.catch_warnings():  # Captum 0.9 alone
        warnings.simplefilter("ignore")  # its note that it hooks the ReLUs
        DeepLift(model).attribute(x.clone().requires_grad_(), baselines=base.expand_as(x), target=0)
    shared = saliency(model, x, torch.tensor([0, 2]), "deeplift", baseline=base)
    separate = saliency(SharedReLU(shared=False), x, torch.tensor([0, 2]), "deeplift", baseline=base)
    assert torch.allclose(shared, separate, atol=1e-6)
    with torch.no_grad():
        delta = model(x)[:, 0] - model(base.expand_as(x))[:, 0]
    assert torch.allclose(shared[0].sum(), delta[0], atol=1e-4)  # no max pooling: summation to delta holds
    assert model.relu2 is model.relu and not model._forward_hooks  # the served model is left as it was


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu, self.fc = nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x) + x).mean((2, 3)))


class WithGELU(Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.features[1] = nn.GELU()


@pytest.mark.parametrize(
    "model, problem",
    [
        (Tiny(), None),
        (TinyLinear(), None),
        (WithGELU(), "layer 'features.1' is a GELU, which Captum's LRP has no rule for"),
        (Tiny3D(), "layer 'features.0' is a Conv3d, which Captum's LRP has no rule for"),
        (SharedReLU(), "module 'relu' runs 2 times a pass"),
        (Residual(), "the network computes 'add' outside its modules \\(of conv, x\\): a residual connection"),
    ],
)
def test_lrp_problem_names_what_captum_has_no_rule_for(model, problem):
    found = lrp_problem(model)
    assert found is None if problem is None else re.search(problem, found), found


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
