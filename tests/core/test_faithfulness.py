import math

import pytest
import torch
from torch import nn

from cnnviz import deletion_insertion
from cnnviz.faithfulness import blur
from tests.tiny import Tiny3D, tiny_clip


class Linear4(nn.Module):
    """``[N, 1, 2, 2]`` -> logits ``[w . x, 0]``, so the probability of class 0 is ``sigmoid(w . x)``;
    ``w`` = [[3, 1], [-1, 0.5]]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[3.0, 1.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))
        self.eval()

    def forward(self, x):
        return self.fc(x.flatten(1))


def sigmoid(logits):
    return [1 / (1 + math.exp(-v)) for v in logits]


def trapezoid(points):
    return sum(a + b for a, b in zip(points, points[1:], strict=False)) / (2 * (len(points) - 1))


def test_the_true_contribution_beats_its_reverse_by_hand():
    # x is all ones, deleted pixels become 0: the contributions are w itself, 3 + 1 - 1 + 0.5 = 3.5 in all.
    x, truth = torch.ones(1, 1, 2, 2), torch.tensor([[[3.0, 1.0], [-1.0, 0.5]]])
    curves = {
        name: deletion_insertion(Linear4(), x, heat, torch.tensor([0]), steps=4, start=torch.zeros_like(x))
        for name, heat in (("truth", truth), ("reverse", -truth))
    }
    # deletion in the map's order: 3, 1, 0.5, -1 (truth); -1, 0.5, 1, 3 (reverse); insertion puts them back
    expected = {
        ("truth", "deletion"): sigmoid([3.5, 0.5, -0.5, -1.0, 0.0]),
        ("reverse", "deletion"): sigmoid([3.5, 4.5, 4.0, 3.0, 0.0]),
        ("truth", "insertion"): sigmoid([0.0, 3.0, 4.0, 4.5, 3.5]),
        ("reverse", "insertion"): sigmoid([0.0, -1.0, -0.5, 0.5, 3.5]),
    }
    for (name, kind), points in expected.items():
        f = curves[name]
        got = f.deletion if kind == "deletion" else f.insertion
        area = f.deletion_auc if kind == "deletion" else f.insertion_auc
        assert got[0].tolist() == pytest.approx(points, abs=1e-6), (name, kind)
        assert area.item() == pytest.approx(trapezoid(points), abs=1e-6)
    assert curves["truth"].deletion_auc < curves["reverse"].deletion_auc
    assert curves["truth"].insertion_auc > curves["reverse"].insertion_auc


def test_rows_and_steps_share_few_passes_and_match_one_row_at_a_time():
    model = Linear4()
    passes = []
    model.register_forward_hook(lambda m, a, o: passes.append(len(a[0])))
    x = torch.stack([torch.ones(1, 2, 2), torch.tensor([[[0.5, -2.0], [1.0, 3.0]]])])
    maps, targets = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 5.0], [-1.0, 2.0]]]), torch.tensor([0, 1])
    both = deletion_insertion(model, x, maps, targets, steps=16, deleted=torch.full((1, 1, 1, 1), -1.0))
    assert passes == [32, 32, 4]  # 2 curves x 2 rows x 17 points, at most 32 inputs a pass
    for k in range(2):
        one = deletion_insertion(model, x[k : k + 1], maps[k : k + 1], targets[k : k + 1], steps=16,
                                 deleted=torch.full((1, 1, 1, 1), -1.0))  # fmt: skip
        assert torch.allclose(one.deletion[0], both.deletion[k]) and torch.allclose(one.insertion[0], both.insertion[k])
    assert (both.deletion_auc >= 0).all() and (both.insertion_auc <= 1).all()


def test_a_clip_deletes_voxels_and_ends_at_the_baseline():
    model, x = Tiny3D(), tiny_clip()
    heat = x[:, 0]  # [1, T, H, W]: a voxel map
    f = deletion_insertion(model, x, heat, torch.tensor([0]), steps=3)
    with torch.no_grad():
        p_x = model(x).softmax(-1)[0, 0].item()
        p_zero = model(torch.zeros_like(x)).softmax(-1)[0, 0].item()
        p_blur = model(blur(x)).softmax(-1)[0, 0].item()
    assert f.deletion.shape == (1, 4)
    assert f.deletion[0, 0].item() == pytest.approx(p_x) and f.deletion[0, -1].item() == pytest.approx(p_zero)
    assert f.insertion[0, 0].item() == pytest.approx(p_blur) and f.insertion[0, -1].item() == pytest.approx(p_x)


def test_blur_keeps_a_flat_image_and_spreads_a_point_by_sigma():
    flat = torch.full((1, 3, 9, 11), 0.7)
    assert torch.allclose(blur(flat, 2.0), flat)
    point = torch.zeros(1, 1, 41, 41)
    point[0, 0, 20, 20] = 1.0
    spread = blur(point, 2.0)[0, 0]
    assert spread.sum().item() == pytest.approx(1.0, abs=1e-5)
    rows = torch.arange(41.0) - 20
    variance = (spread.sum(1) * rows**2).sum().item()
    assert variance == pytest.approx(4.0, rel=0.02)  # sigma 2 (the kernel is cut at 3 sigma)
    assert torch.equal(blur(point), blur(point, 5 * 41 / 224))  # default: 5 px at 224 px


def test_bad_arguments():
    x = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.64"):
        deletion_insertion(Linear4(), x, x[:, 0], torch.tensor([0]), steps=65)
    with pytest.raises(ValueError, match="do not match"):
        deletion_insertion(Linear4(), x, x[:, 0, :1], torch.tensor([0]))
