import math

import pytest
import torch

from cnnviz import capture_outputs, forward, restore_mode
from tests.tiny import Tiny, tiny_input


def test_capture_keeps_pre_relu_values_despite_inplace_relu():
    model = Tiny()
    with torch.no_grad(), capture_outputs(model, ["features.0", "features.1"]) as out:
        model(tiny_input())
    assert out["features.0"].tolist() == [[[[11.0, 15.0]], [[-12.0, -16.0]]]]
    assert out["features.1"].tolist() == [[[[11.0, 15.0]], [[0.0, 0.0]]]]


def test_hooks_are_removed_even_when_the_forward_pass_fails():
    model = Tiny()
    with pytest.raises(RuntimeError), capture_outputs(model, ["features.0", "fc"]):
        model(torch.zeros(1, 5, 2, 3))  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_do_not_accumulate_over_many_calls():
    model = Tiny()
    for _ in range(200):
        forward(model, tiny_input(), ["features.0"])
    assert all(not m._forward_hooks for m in model.modules())


def test_forward_gives_softmax_of_hand_computed_logits_and_the_asked_layers_only():
    probs, acts = forward(Tiny(), tiny_input(), ["features.1"])
    denom = math.exp(13) + 2
    expected = [math.exp(13) / denom, 1 / denom, 1 / denom]
    assert probs.shape == (1, 3)
    assert probs[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert list(acts) == ["features.1"]
    assert acts["features.1"][0, 0].tolist() == [[11.0, 15.0]]


def test_a_module_called_twice_keeps_its_last_output():
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential()
    model.add_module("act", relu)

    def twice(x):
        return relu(relu(x) - 5)

    model.forward = twice
    with capture_outputs(model, ["act"]) as out:
        model(torch.tensor([7.0, 1.0]))
    assert out["act"].tolist() == [2.0, 0.0]


def test_restore_mode_restores_each_module():
    model = Tiny().train()
    model.fc.eval()
    with restore_mode(model, train=False):
        assert not any(m.training for m in model.modules())
    assert model.training and model.features.training and not model.fc.training
