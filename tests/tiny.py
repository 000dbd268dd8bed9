"""A tiny classifier with hand-set weights whose every output is worked out by hand in the tests."""

from __future__ import annotations

import torch
from torch import nn


def _hand_set(conv: nn.Module, fc: nn.Linear) -> None:
    """Channel 0 of ``conv`` sums its window and subtracts 1, channel 1 is minus the sum; ``fc`` copies the two
    pooled channels to classes 0 and 1, class 2 gets 0."""
    with torch.no_grad():
        ones = torch.ones_like(conv.weight[0])
        conv.weight.copy_(torch.stack([ones, -ones]))
        conv.bias.copy_(torch.tensor([-1.0, 0.0]))
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        fc.bias.zero_()


class Tiny(nn.Module):
    """conv(3->2, k=2) -> ReLU(inplace) -> global average pool -> linear(2->3).

    Channel 0 of the convolution sums its 2x2x3 window and subtracts 1; channel 1 is minus the sum.
    The linear layer copies the two pooled channels to classes 0 and 1; class 2 gets 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, kernel_size=2), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)
        _hand_set(self.features[0], self.fc)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_input() -> torch.Tensor:
    """``[1, 3, 2, 3]``: channel 0 is [[1, 2, 3], [4, 5, 6]], the others zero.

    By hand: conv channel 0 = [[1+2+4+5-1, 2+3+5+6-1]] = [[11, 15]]; channel 1 = [[-12, -16]];
    after ReLU [[11, 15]] and [[0, 0]]; pooled [13, 0]; logits [13, 0, 0].
    """
    x = torch.zeros(1, 3, 2, 3)
    x[0, 0] = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    return x


class Tiny3D(nn.Module):
    """Tiny over time: conv3d(3->2, k=(1, 2, 2)) -> ReLU(inplace) -> global average pool -> linear(2->3).

    The same hand-set weights as :class:`Tiny`: channel 0 of the convolution sums its 2x2x3 window (one frame) and
    subtracts 1, channel 1 is minus the sum; the linear layer copies the pooled channels to classes 0 and 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(3, 2, kernel_size=(1, 2, 2)), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, 3)
        _hand_set(self.features[0], self.fc)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_clip() -> torch.Tensor:
    """``[1, 3, 2, 2, 3]``: two frames; channel 0 is [[1, 2, 3], [4, 5, 6]] in frame 0 and twice that in frame 1.

    By hand: conv channel 0 = [[11, 15]] in frame 0 and [[2 * 12 - 1, 2 * 16 - 1]] = [[23, 31]] in frame 1;
    channel 1 = minus the sums: [[-12, -16]], [[-24, -32]]; pooled [20, 0]; logits [20, 0, 0].
    """
    x = torch.zeros(1, 3, 2, 2, 3)
    frame = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    x[0, 0, 0], x[0, 0, 1] = frame, 2 * frame
    return x


class TinyLinear(nn.Module):
    """A linear classifier of ``[N, 3, 2, 3]`` inputs with hand-set weights: class 0 is ``sum(W * x)``, class 1 its
    negative, class 2 zero (no bias). ``W``: channel 0 [[1, -1, 1], [1, 1, -1]], channel 1 all 2, channel 2 all 7.

    For a linear model every attribution method with a baseline ``b`` gives ``W * (x - b)`` per element, and the
    perturbation methods give the sum of that over the pixels they remove.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(18, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([linear_weight().flatten(), -linear_weight().flatten(), torch.zeros(18)]))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def linear_weight() -> torch.Tensor:
    """:class:`TinyLinear`'s class-0 weights ``[3, 2, 3]``."""
    w = torch.empty(3, 2, 3)
    w[0] = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    w[1], w[2] = 2.0, 7.0
    return w


def linear_input() -> torch.Tensor:
    """``[1, 3, 2, 3]``: channel 0 is [[1, 2, 3], [4, 5, 6]], channel 1 all ones, channel 2 zero.

    By hand, the contribution of each pixel to class 0 (summed over channels) from a zero baseline is
    [[1 + 2, -2 + 2, 3 + 2], [4 + 2, 5 + 2, -6 + 2]] = [[3, 0, 5], [6, 7, -4]]: logit 17. From a baseline of -1
    everywhere: [[2 + 4 + 7, -3 + 4 + 7, 4 + 4 + 7], [5 + 4 + 7, 6 + 4 + 7, -7 + 4 + 7]] = [[13, 8, 15], [16, 17, 4]].
    """
    x = torch.zeros(1, 3, 2, 3)
    x[0, 0] = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    x[0, 1] = 1.0
    return x
