"""ShapesNet: a small CNN for the procedurally generated shapes of ``shapes_data.py`` (64 x 64 RGB, 6 classes).

This file is what a user's own model looks like to ``./archive.sh``: one ``nn.Module`` class, built with no
arguments, whose state dict is ``weights.pt`` beside it. Like AlexNet and VGG it uses ``ReLU(inplace=True)`` after
each convolution, so the tests catch hooks that would see post-ReLU values.
"""

import torch
from torch import nn


class ShapesNet(nn.Module):
    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 32
            nn.Conv2d(12, 24, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 16
            nn.Conv2d(24, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
