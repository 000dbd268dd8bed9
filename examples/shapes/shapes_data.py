"""Procedurally generated shapes with known labels and bounding boxes, for training and for checking meaning.

Six classes: a circle, a square, a triangle, a cross, horizontal and vertical stripes (a striped square patch), at
random places, sizes and colours on a noisy, tinted background. Deterministic for a seed.
"""

from __future__ import annotations

import torch

CLASSES = ("circle", "square", "triangle", "cross", "horizontal stripes", "vertical stripes")
SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def make_shapes(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [n, 3, size, size] in [0, 1], labels [n], boxes [n, 4] as x0, y0, x1, y1 inclusive)``."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    r = uniform(0.12, 0.24, n, 1, 1) * size
    cx = uniform(0.0, 1.0, n, 1, 1) * (size - 2 * r) + r
    cy = uniform(0.0, 1.0, n, 1, 1) * (size - 2 * r) + r
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    dx, dy = xs - cx, ys - cy
    inside_square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    period = torch.clamp(0.3 * r, min=2.0)
    shapes = [
        dx**2 + dy**2 <= r**2,
        inside_square,
        (dy <= 0.8 * r) & (dx.abs() <= (dy + r) / 1.8),
        ((dx.abs() <= 0.3 * r) & (dy.abs() <= r)) | ((dy.abs() <= 0.3 * r) & (dx.abs() <= r)),
        inside_square & (torch.floor(dy / period) % 2 == 0),
        inside_square & (torch.floor(dx / period) % 2 == 0),
    ]
    mask = torch.stack(shapes)[labels, torch.arange(n)]  # [n, size, size]

    background = uniform(0.15, 0.85, n, 3, 1, 1)
    colour = uniform(0.0, 1.0, n, 3, 1, 1)
    too_close = (colour - background).abs().mean(dim=1, keepdim=True) < 0.3
    colour = torch.where(too_close, 1.0 - background, colour)
    images = torch.where(mask.unsqueeze(1), colour, background)
    images = (images + 0.06 * torch.randn(images.shape, generator=g)).clamp(0, 1)

    cols, rows = mask.any(dim=1), mask.any(dim=2)
    idx = torch.arange(size)
    boxes = torch.stack(
        [
            torch.where(cols, idx, size).amin(1),
            torch.where(rows, idx, size).amin(1),
            torch.where(cols, idx, -1).amax(1),
            torch.where(rows, idx, -1).amax(1),
        ],
        dim=1,
    )
    return images, labels, boxes


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std
