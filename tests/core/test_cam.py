import pytest
import torch

from cnnviz import GradCAM, GradCAMPlusPlus, LayerHooks
from tests.tiny import Tiny, tiny_input


def tiny_with_mixed_signs():
    """Tiny, but conv channel 1 gets bias 14 (pre-ReLU output [[2, -2]]) and class 2 = minus pooled channel 1."""
    model = Tiny()
    with torch.no_grad():
        model.features[0].bias[1] = 14.0
        model.fc.weight[2] = torch.tensor([0.0, -1.0])
    return model


def test_hook_keeps_the_layers_own_output_before_the_inplace_relu():
    model = Tiny()
    with torch.enable_grad(), LayerHooks(model, ["features.0"], keep="graph") as hooks:
        hooks.run(tiny_input())
    assert hooks.outputs["features.0"].tolist() == [[[[11.0, 15.0]], [[-12.0, -16.0]]]]
    assert not model.features[0]._forward_hooks


def test_gradcam_by_hand():
    # Class 0: G0 = d(mean relu A0)/dA0 = 0.5 everywhere, w = (0.5, 0); cam = relu(0.5 [11, 15]) = [5.5, 7.5],
    # bilinearly resized from width 2 to 3 (align_corners=False): [5.5, 6.5, 7.5] on both rows.
    result = GradCAM(Tiny(), "features.0")(tiny_input(), torch.tensor([0]))
    assert result.targets.tolist() == [0]
    assert result.cams.tolist() == [[[5.5, 6.5, 7.5], [5.5, 6.5, 7.5]]]
    assert result.peaks.tolist() == [7.5]


def test_gradcam_uses_pre_relu_activations():
    # Class 2 = -mean(relu(A1)), A1 = [2, -2]: G1 = [-0.5, 0], w1 = -0.25; cam = relu(-0.25 [2, -2]) = [0, 0.5]
    # -> [0, 0.25, 0.5]. Post-ReLU activations [2, 0] would give all zeros.
    result = GradCAM(tiny_with_mixed_signs(), "features.0")(tiny_input(), torch.tensor([2]))
    assert result.cams.tolist() == [[[0.0, 0.25, 0.5], [0.0, 0.25, 0.5]]]


def test_gradcam_plus_plus_by_hand():
    # Class 0: G0 = 0.5, sum A0 = 26: alpha = 0.25 / (0.5 + 26 * 0.125) = 1/15, w0 = 2 * 0.5 / 15 = 1/15.
    # cam = [11, 15] / 15 -> resized [11/15, 13/15, 1].
    result = GradCAMPlusPlus(Tiny(), "features.0")(tiny_input(), torch.tensor([0]))
    assert result.cams[0, 0].tolist() == pytest.approx([11 / 15, 13 / 15, 1.0], rel=1e-6)


def test_default_target_is_top1_and_rows_keep_their_own():
    model = tiny_with_mixed_signs()
    x = tiny_input().repeat(2, 1, 1, 1)
    result = GradCAM(model, "features.0")(x, torch.tensor([-1, 2]))
    assert result.targets.tolist() == [0, 2]
    assert result.cams[0, 0].tolist() == [5.5, 6.5, 7.5]
    assert result.cams[1, 0].tolist() == [0.0, 0.25, 0.5]


def test_hooks_removed_and_modes_restored_after_failure():
    model = Tiny().train()
    with pytest.raises(RuntimeError):
        GradCAM(model, "features.0")(torch.zeros(1, 5, 2, 3), None)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training


def test_no_parameter_gradients_accumulate():
    model = Tiny()
    for _ in range(3):
        GradCAM(model, "features.0")(tiny_input())
    assert all(p.grad is None for p in model.parameters())
