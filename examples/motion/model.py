"""MotionNet: a small 3-D CNN for the generated clips of ``motion_data.py`` (16 frames of 64 x 64 RGB, 6 classes).

Like ``examples/shapes/model.py``, this file is what a user's own model looks like to ``./archive.sh``: one
``nn.Module`` class, built with no arguments, whose state dict is ``weights.pt`` beside it. Every convolution is
3-D (time, height, width) and followed by ``ReLU(inplace=True)``. ``features`` pools time only twice, so its output
keeps a time axis, ``[N, 32, 4, 16, 16]`` for a clip of 16 frames: Grad-CAM over it says when as well as where.
"""

import torch
from torch import nn


class MotionNet(nn.Module):
    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 8, (3, 4, 4), stride=(1, 2, 2), padding=1, padding_mode="replicate"),  # 16 x 32 x 32
            nn.GroupNorm(8, 8),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),  # 16 x 16 x 16
            nn.Conv3d(8, 16, 3, padding=1, padding_mode="replicate"),
            nn.BatchNorm3d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((2, 1, 1)),  # 8 x 16 x 16
            nn.Conv3d(16, 32, (1, 3, 3), padding=(0, 1, 1), padding_mode="replicate"),
            nn.BatchNorm3d(32),
            nn.ReLU(inplace=True),
            nn.Conv3d(32, 32, (1, 3, 3), padding=(0, 1, 1), padding_mode="replicate"),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveMaxPool3d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
