"""A second architecture for the shapes, to judge pictures with: wider than ShapesNet, with BatchNorm, max pooling
at three scales and no ReLU(inplace). Trained by ``train.py --arch judge``; never served."""

import torch
from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class JudgeNet(nn.Module):
    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, 16), nn.MaxPool2d(2),  # 32
            *_block(16, 32), nn.MaxPool2d(2),  # 16
            *_block(32, 64), *_block(64, 64), nn.MaxPool2d(2),  # 8
        )  # fmt: skip
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x).amax((2, 3)), 1))
