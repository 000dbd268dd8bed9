"""The CAM methods beyond Grad-CAM, each checked by hand on tiny hand-set models (numbers worked out in comments),
and on the trained shapes model: rows are independent, and 3-D (video) inputs take the same code."""

import math

import pytest
import torch
from torch import nn

from cnnviz import (
    CAM_METHODS,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    HiResCAM,
    InputTooLarge,
    LayerCAM,
    OverBudget,
    PerturbationCAM,
    ScoreCAM,
    XGradCAM,
    first_component,
)
from examples.shapes.shapes_data import make_shapes, normalize
from tests.services import shapes_model
from tests.tiny import Tiny, Tiny3D, tiny_clip, tiny_input

T0, T2 = torch.tensor([0]), torch.tensor([2])


def leaky_tiny():
    """Tiny, with the gradient alive where the layer is negative: conv channel 1 gets bias 15 (A1 = [3, -1]), the
    ReLU becomes LeakyReLU(0.5), and class 2 = pooled channel 0 - pooled channel 1.

    Target 2: G0 = 1/2 [1, 1] = [0.5, 0.5]; G1 = -1/2 [1, 0.5] = [-0.5, -0.25]; with A0 = [11, 15]:
    G A = [5.5, 7.5] and [-1.5, 0.25].
    """
    model = Tiny()
    model.features[1] = nn.LeakyReLU(0.5)
    with torch.no_grad():
        model.features[0].bias[1] = 15.0
        model.fc.weight[2] = torch.tensor([1.0, -1.0])
    return model


def close(actual, expected, rtol=0.0, atol=0.0):
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=rtol, atol=atol)


def row(values):
    """A map of width 2 resized to the 2 x 3 input: columns [a, (a + b) / 2, b] on both rows."""
    a, b = values
    return [[a, (a + b) / 2, b]] * 2


@pytest.mark.parametrize(
    "cls, expected",
    [
        (GradCAM, [4.375, 7.875]),  # w = mean G = (0.5, -0.375): 0.5 [11, 15] - 0.375 [3, -1]
        (HiResCAM, [4.0, 7.75]),  # sum over channels of G A
        (GradCAMElementWise, [5.5, 7.75]),  # ReLU(G A) drops -1.5, keeps 0.25 (G < 0 and A < 0)
        (LayerCAM, [5.5, 7.5]),  # ReLU(G) A drops channel 1 (G < 0 there)
        (XGradCAM, [3.625, 8.125]),  # w = (13 / 26, -1.25 / 2) = (0.5, -0.625): 0.5 [11, 15] - 0.625 [3, -1]
    ],
)
def test_gradient_variants_by_hand(cls, expected):
    result = cls(leaky_tiny(), "features.0")(tiny_input(), T2)
    close(result.cams[0], row(expected), rtol=1e-6)
    assert result.targets.tolist() == [2]


def linear_head(weights):
    """The layer ``0`` is a 1 x 1 convolution that copies its input: its activations are the input ``[N, 2, 1, 4]``;
    then global average pooling and a linear layer with these class weights (no bias)."""
    copy, fc = nn.Conv2d(2, 2, 1, bias=False), nn.Linear(2, len(weights), bias=False)
    with torch.no_grad():
        copy.weight.copy_(torch.eye(2)[:, :, None, None])
        fc.weight.copy_(torch.tensor(weights))
    return nn.Sequential(copy, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


def known_component(sign=1.0):
    """Four positions of two channels: mean (1, 1) + s u + t o, u = (0.6, 0.8), o = (-0.8, 0.6), s = sign [3, -1, -1,
    -1], t = [0, 1, -1, 0]: variance 12 along u, 2 along o, so the first principal component is u and each
    position's projection on it is s."""
    s, t = sign * torch.tensor([3.0, -1, -1, -1]), torch.tensor([0.0, 1, -1, 0])
    points = 1 + s[:, None] * torch.tensor([0.6, 0.8]) + t[:, None] * torch.tensor([-0.8, 0.6])
    return points.T.reshape(1, 2, 1, 4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigencam_projects_on_the_known_first_component(sign):
    # Projections s = [3, -1, -1, -1] (or minus that: the SVD's sign is arbitrary, ours puts the largest magnitude
    # positive): map ReLU -> [3, 0, 0, 0], whatever the class and the sign of s.
    x = known_component(sign)
    for target in (0, 1):
        result = EigenCAM(linear_head([[1.0, 0.0], [0.0, -1.0]]), "0")(x, torch.tensor([target]))
        close(result.cams[0, 0], [3.0, 0.0, 0.0, 0.0], atol=1e-5)
    close(first_component(x)[0, 0], [3.0, -1.0, -1.0, -1.0], atol=1e-5)


def test_eigengradcam_and_eigen_smooth_project_the_weighted_activations():
    # Class 0 reads channel 0 only: G = (1/4, 0) at every position, G A = (A0 / 4, 0); its first component is channel
    # 0, centred: ([2.8, -0.4, 1.2, 0.4] - 1) / 4 = [0.45, -0.35, 0.05, -0.15] -> ReLU [0.45, 0, 0.05, 0]. Grad-CAM
    # weights (1/4, 0) give the same W, so eigen_smooth gives the same map; its plain map is A0 / 4.
    model, x = linear_head([[1.0, 0.0], [0.0, 1.0]]), known_component()
    expected = [0.45, 0.0, 0.05, 0.0]
    close(EigenGradCAM(model, "0")(x, T0).cams[0, 0], expected, atol=1e-6)
    close(GradCAM(model, "0")(x, T0, eigen_smooth=True).cams[0, 0], expected, atol=1e-6)
    close(GradCAM(model, "0")(x, T0).cams[0, 0], [0.7, 0.0, 0.3, 0.1], atol=1e-6)


def test_scorecam_by_hand():
    # Tiny with class 0's bias 2. A0 = [11, 15], A1 = [-12, -16] (1 x 2), resized to 2 x 3 and min-max scaled:
    # M0 = [0, 0.5, 1], M1 = [1, 0.5, 0] on both rows. Input channel 0 = [[1, 2, 3], [4, 5, 6]]:
    # x M0 = [[0, 1, 3], [0, 2.5, 6]]: conv channel 0 = [3.5 - 1, 12.5 - 1] = [2.5, 11.5], pooled 7: y0 = 9;
    # x M1 = [[1, 1, 0], [4, 2.5, 0]]: [8.5 - 1, 3.5 - 1] = [7.5, 2.5], pooled 5: y0 = 7;
    # the baseline (all zeros): channel 0 = -1 -> 0: y0 = 2. w = (9 - 2, 7 - 2) = (7, 5);
    # cam = ReLU(7 [11, 15] + 5 [-12, -16]) = [17, 25] (without the baseline, (9, 7): [15, 23]).
    model = Tiny()
    with torch.no_grad():
        model.fc.bias[0] = 2.0
    result = ScoreCAM(model, "features.0")(tiny_input(), T0)
    close(result.cams[0], row([17.0, 25.0]), rtol=1e-6)
    assert result.logits[0].tolist() == [15.0, 0.0, 0.0]


def test_ablationcam_by_hand():
    # Tiny, conv channel 1 bias 14 (A1 = [2, -2]), class 2 = pooled 0 - pooled 1 = 13 - 1 = 12.
    # Channel 0 zeroed: 0 - 1 = -1, w0 = (12 + 1) / 12 = 13/12; channel 1 zeroed: 13 - 0, w1 = (12 - 13) / 12 =
    # -1/12. cam = ReLU(13/12 [11, 15] - 1/12 [2, -2]) = [141/12, 197/12].
    model = Tiny()
    with torch.no_grad():
        model.features[0].bias[1] = 14.0
        model.fc.weight[2] = torch.tensor([1.0, -1.0])
    result = AblationCAM(model, "features.0")(tiny_input(), T2)
    close(result.cams[0], row([141 / 12, 197 / 12]), rtol=1e-6)
    # A negative score divides by |y|: class 2 = pooled 1 - pooled 0 = -12: channel 0 zeroed: 1, w0 = (-12 - 1) / 12;
    # channel 1 zeroed: -13, w1 = (-12 + 13) / 12: cam = ReLU(-13/12 [11, 15] + 1/12 [2, -2]) = 0 (channel 0 argues
    # against the class; dividing by y = -12 would have made it argue for it).
    with torch.no_grad():
        model.fc.weight[2] = torch.tensor([-1.0, 1.0])
    assert AblationCAM(model, "features.0")(tiny_input(), T2).cams.abs().max().item() == 0.0


def rows_through(module):
    """A list that collects the batch size of every forward pass of ``module`` (with the hook to remove)."""
    seen = []
    return seen, module.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))


def test_a_channel_that_is_zero_everywhere_costs_no_pass():
    # Tiny with conv channel 1 zeroed (weights and bias): A1 = [0, 0]. Score-CAM as by hand above: w0 = 9 - 2 = 7,
    # cam = 7 [11, 15]; channel 1 is not run (its score is the baseline's: 0). Passes: the capture (1 row), the
    # baseline (1 row) and channel 0 (1 row), not a batch of both channels.
    model = Tiny()
    with torch.no_grad():
        model.fc.bias[0] = 2.0
        model.features[0].weight[1] = 0.0
        model.features[0].bias[1] = 0.0
    seen, hook = rows_through(model)
    result = ScoreCAM(model, "features.0")(tiny_input(), T0)
    hook.remove()
    close(result.cams[0], row([77.0, 105.0]), rtol=1e-6)
    assert seen == [1, 1, 1]
    # Ablation-CAM: zeroing channel 1 changes nothing, so it is not run either: the capture and one ablation pass
    # (counted at the classifier: the layers below run once, the edited layer's output has a row per ablation).
    seen, hook = rows_through(model.fc)
    AblationCAM(model, "features.0")(tiny_input(), T0)
    hook.remove()
    assert seen == [1, 1]


class CatTiny(Tiny):
    """Tiny whose classifier also reads the input's mean (with weight 0): the layers above features.0 combine its
    output with a tensor from below it, so they cannot take a batch larger than the input's."""

    def __init__(self):
        super().__init__()
        old, self.fc = self.fc, nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, :2] = old.weight
            self.fc.bias.copy_(old.bias)

    def forward(self, x):
        pooled = self.pool(self.features(x)).flatten(1)
        return self.fc(torch.cat([pooled, x.mean((1, 2, 3))[:, None]], 1))


def test_ablation_repeats_the_input_where_the_layers_above_cannot_take_a_larger_batch():
    x = tiny_input().repeat(2, 1, 1, 1)
    x[1, 0] = x[1, 0].flip(-1)
    plain = AblationCAM(Tiny(), "features.0")(x, torch.tensor([0, 0])).cams
    assert AblationCAM(CatTiny(), "features.0")(x, torch.tensor([0, 0])).cams.tolist() == plain.tolist()

    class OneAtATime(AblationCAM):  # both channels in one batch above the layer, but one at a time when repeating
        batch_size = 1

    assert OneAtATime(CatTiny(), "features.0")(x, torch.tensor([0, 0])).cams.tolist() == plain.tolist()
    # Tiny: channel 0 zeroed leaves 0, w0 = 1 and the map is A0 (w1 = 0: channel 1 is below 0, ReLU'd anyway)
    assert plain[0].tolist() == row([11.0, 15.0])


def test_fullgrad_by_hand():
    # Tiny, class 0 = mean(ReLU(A0)), A0 = windows' sums - 1 (both > 0). Input term: dy/dx = [[0.5, 1, 0.5]] * 2 on
    # every input channel, times x (zero but channel 0): [[0.5, 2, 1.5], [2, 5, 3]]; |.| min-max scaled over the
    # row (min 0, max 5), summed over channels: [[0.1, 0.4, 0.3], [0.4, 1, 0.6]]. Bias term of the convolution:
    # b G = (-1 [0.5, 0.5], 0 [0, 0]) -> |.| scaled: [1, 1] and [0, 0], summed: [1, 1], resized: 1 everywhere.
    # The linear layer is not spatial: it does not count. 'layer' is ignored.
    result = FullGrad(Tiny(), "no such layer")(tiny_input(), T0)
    close(result.cams[0], [[1.1, 1.4, 1.3], [1.4, 2.0, 1.6]], rtol=1e-5)
    # Input channels 1 and 2 all ones: x dy/dx there is [[0.5, 1, 0.5]] * 2, the minimum 0.5 is subtracted and the
    # maximum is 5 - 0.5: ([[0, 1.5, 1], [1.5, 4.5, 2.5]] + 2 [[0, 0.5, 0]] * 2) / 4.5; the bias term stays 1.
    x = tiny_input()
    x[0, 1:] = 1.0
    expected = torch.tensor([[0.0, 2.5, 1.0], [1.5, 5.5, 2.5]]) / 4.5 + 1
    close(FullGrad(Tiny(), "features.0")(x, T0).cams[0], expected.tolist(), rtol=1e-5)


def test_aug_smooth_flips_the_maps_back_and_averages():
    # Conv channel 0 reads only the left column of its window: A0 = [1 + 4, 2 + 5] - 1 = [4, 6] for x, and for the
    # mirrored x [[3, 2, 1], [6, 5, 4]]: [3 + 6, 2 + 5] - 1 = [8, 6], flipped back [6, 8]. Times 0.9, 1, 1.1 the
    # sums scale and the means over the three factors are the sums: Grad-CAM (w0 = 0.5) averages 0.5 [4, 6] and
    # 0.5 [6, 8] = [2.5, 3.5] (without flipping back: 0.5 [6, 6]).
    model = Tiny()
    with torch.no_grad():
        model.features[0].weight[0, :, :, 1] = 0.0
    result = GradCAM(model, "features.0")(tiny_input(), None, aug_smooth=True)
    close(result.cams[0], row([2.5, 3.5]), rtol=1e-6)
    assert result.targets.tolist() == [0] and result.logits[0].tolist() == [5.0, 0.0, 0.0]


def test_perturbation_methods_refuse_over_their_caps():
    with pytest.raises(InputTooLarge, match=r"1 inputs x 2 channels of layer 'features.0' is 2 passes, over the cap"):
        ScoreCAM(Tiny(), "features.0", max_passes=1)(tiny_input(), T0)
    with pytest.raises(InputTooLarge, match="6 inputs x 2 channels"):  # aug_smooth's copies are rows
        AblationCAM(Tiny(), "features.0", max_passes=11)(tiny_input(), T0, aug_smooth=True)
    with pytest.raises(OverBudget, match="no time is left"):
        ScoreCAM(Tiny(), "features.0", deadline=0.0)(tiny_input(), T0)


@pytest.mark.parametrize("cls", [GradCAM, HiResCAM, GradCAMElementWise, XGradCAM, LayerCAM])
def test_gradient_variants_over_time(cls):
    # Tiny3D on the clip, class 0: G0 = 1/4 at every position (pooled over 2 frames x 2), G1 = 0 (A1 < 0), so every
    # variant's map is A0 / 4 = [[2.75, 3.75]], [[5.75, 7.75]], trilinear to [2, 2, 3].
    result = cls(Tiny3D(), "features.0")(tiny_clip(), T0)
    close(result.cams[0], [[[2.75, 3.25, 3.75]] * 2, [[5.75, 6.75, 7.75]] * 2], rtol=1e-6)


def test_eigencam_over_time():
    # A1 = -(A0 + 1): centred, the positions lie on (1, -1) / sqrt 2 with projections sqrt 2 (A0 - 20) =
    # sqrt 2 [-9, -5, 3, 11]; ReLU: frame 0 is zero, frame 1 [3, 11] sqrt 2.
    result = EigenCAM(Tiny3D(), "features.0")(tiny_clip(), T0)
    r2 = math.sqrt(2)
    close(result.cams[0], [[[0.0] * 3] * 2, [[3 * r2, 7 * r2, 11 * r2]] * 2], atol=1e-5)


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_takes_a_clip(method):
    clip = torch.cat([tiny_clip(), tiny_clip().flip(-1)])
    result = CAM_METHODS[method](Tiny3D(), "features.0")(clip, torch.tensor([0, -1]), aug_smooth=True)
    assert result.cams.shape == (2, 2, 2, 3) and result.targets.tolist() == [0, 0]
    assert bool((result.cams >= 0).all()) and bool((result.peaks > 0).all())


@pytest.fixture(scope="module")
def shapes():
    images, labels, _ = make_shapes(3, 7)
    return shapes_model(), normalize(images), labels


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
@pytest.mark.parametrize("smooth", [{}, {"aug_smooth": True, "eigen_smooth": True}], ids=["plain", "smoothed"])
def test_a_row_alone_equals_the_same_row_in_a_batch(shapes, method, smooth):
    model, x, labels = shapes
    cam = CAM_METHODS[method](model, "features")
    targets = torch.tensor([labels[0].item(), -1, (labels[2].item() + 1) % 6])  # asked, top-1, another class
    batch = cam(x, targets, **smooth)
    for k in range(len(x)):
        alone = cam(x[k : k + 1], targets[k : k + 1], **smooth)
        assert alone.targets.tolist() == batch.targets[k : k + 1].tolist()
        peak = batch.peaks[k].item()
        assert peak > 0 or method in ("ablationcam", "scorecam")
        torch.testing.assert_close(alone.cams[0], batch.cams[k], rtol=1e-4, atol=1e-4 * peak + 1e-6)


def test_the_perturbation_methods_are_the_ones_with_caps():
    assert {n for n, c in CAM_METHODS.items() if issubclass(c, PerturbationCAM)} == {"scorecam", "ablationcam"}
