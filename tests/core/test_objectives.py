"""The objective algebra on the hand-set tiny model, whose every activation is known (tests/tiny.py): sums, negatives,
directions and diversity against values worked out by hand; then two short optimizations on the shapes model."""

import math

import pytest
import torch

from cnnviz import Direction, Diversity, Objective, Settings, Sum, Target, actmax
from examples.shapes.shapes_data import MEAN, STD
from tests.services import shapes_model
from tests.tiny import Tiny, tiny_input

# tiny_input through Tiny (tests/tiny.py): features.0 (the convolution, before the ReLU) is channel 0 [[11, 15]] and
# channel 1 [[-12, -16]]; the logits are [13, 0, 0]. Twice the input: channel 0 [[23, 31]], channel 1 [[-24, -32]].
CH0, CH1 = Target("features.0", 0), Target("features.0", 1)


def values(rows, x, classes="logprob"):
    with Objective(Tiny(), rows, classes) as objective:
        return objective(x)


def test_terms_compose_into_sums_that_read_as_written():
    e = 0.5 * CH0 - CH1
    assert e == Sum(((0.5, CH0), (-1.0, CH1)))
    assert (-CH0).parts() == ((-1.0, CH0),) and (CH0 * 2).parts() == ((2.0, CH0),)
    assert (2 * (CH0 - CH1)).parts() == ((2.0, CH0), (-2.0, CH1))
    assert e.text() == "0.5 * features.0:0 - features.0:1"
    assert (-Target("", 1) + Target("", 0)).text(["zero", "one", "two"]) == "-one + zero"
    assert (CH0 + 0.25 * Diversity("features.0")).text() == "features.0:0 + 0.25 * diversity(features.0)"
    with pytest.raises(TypeError):
        CH0 * "2"


def test_a_weighted_sum_equals_the_hand_sum():
    x = tiny_input()
    # channel means 13 and -14: 0.5 * 13 - (-14) = 20.5; a target alone is what it was: 13; logits 13 - 0 = 13
    rows = [0.5 * CH0 - CH1, CH0, Target("", 0) - Target("", 1), -CH1 + -CH1]
    assert values(rows, x.repeat(4, 1, 1, 1), "logit").tolist() == [20.5, 13.0, 13.0, 28.0]


def test_a_negative_term_pulls_the_other_way():
    # d mean(channel 0) / dx: the 2x2 windows at columns 0..1 and 1..2, halved: [0.5, 1, 0.5] in every row and colour
    hand = torch.tensor([[0.5, 1.0, 0.5], [0.5, 1.0, 0.5]]).expand(1, 3, 2, 3)
    for row, sign in ((CH0, 1.0), (-CH0, -1.0)):
        x = tiny_input().requires_grad_(True)
        values([row], x).sum().backward()
        assert torch.allclose(x.grad, sign * hand)


def test_direction_is_the_mean_cosine_over_positions():
    x = tiny_input().repeat(2, 1, 1, 1)
    # positions (11, -12) and (15, -16) against (1, 0); the logits [13, 0, 0] against (1, 1, 0)
    got = values([Direction("features.0", (1.0, 0.0)), Direction("fc", (1.0, 1.0, 0.0))], x)
    want = [(11 / math.sqrt(11**2 + 12**2) + 15 / math.sqrt(15**2 + 16**2)) / 2, 1 / math.sqrt(2)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="needs 2 numbers, got 3"):
        values([Direction("features.0", (1.0, 0.0, 0.0))], x[:1])


def test_diversity_of_identical_and_of_different_images():
    x = tiny_input()
    d = Diversity("features.0")
    # identical images: cosine 1, so -1 times the weight; a row alone (its expression appears once): 0
    got = values([d, d, 2 * d, 2 * d, CH0 + d], torch.cat([x, x, x, x, x]))
    assert got.tolist() == pytest.approx([-1.0, -1.0, -2.0, -2.0, 13.0], abs=1e-6)
    # x and 2x: Gram matrices [[346, -372], [-372, 400]] and [[1490, -1544], [-1544, 1600]], flattened
    g1, g2 = [346, -372, -372, 400], [1490, -1544, -1544, 1600]
    cos = sum(a * b for a, b in zip(g1, g2, strict=True)) / math.sqrt(sum(a * a for a in g1) * sum(b * b for b in g2))
    assert values([3 * d, 3 * d], torch.cat([x, 2 * x])).tolist() == pytest.approx([-3 * cos] * 2, abs=1e-6)


def test_the_layers_come_from_the_terms():
    inner = Objective(Tiny(), [CH0 + Direction("fc", (1.0, 0.0, 0.0)), Diversity("features")])
    assert sorted(inner.hooks.names) == ["fc", "features", "features.0"] and inner.hooks.stop
    classes = Objective(Tiny(), [CH0 - Target("", 2)])
    assert classes.hooks.names == ["features.0"] and classes.needs_classes and not classes.hooks.stop


@pytest.fixture(scope="module")
def shapes():
    return shapes_model()


def test_a_negative_target_is_lowered(shapes):
    result = actmax(shapes, [-Target("features.3", 1)], Settings(size=32, steps=10, lr=0.1, mean=MEAN, std=STD))
    assert result.end > result.start + 0.1  # minus the channel rose: the channel fell


def test_diversity_makes_two_images_of_one_target_differ_more(shapes):
    cfg = Settings(size=32, steps=20, lr=0.1, mean=MEAN, std=STD)
    target = Target("features.3", 1)
    apart = {}
    for weight in (0.0, 1.0):
        row = target + weight * Diversity("features.3") if weight else target
        images = actmax(shapes, [row, row], cfg).images
        apart[weight] = (images[0] - images[1]).abs().mean().item()
    assert apart[1.0] > 1.3 * apart[0.0], apart
