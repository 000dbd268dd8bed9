"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): does a map rank the pixels the network needs first?

Deletion replaces the pixels a map ranks highest by a baseline, a growing fraction ``k / steps`` at a time, and
records the target's softmax probability after each step; a faithful map makes it fall fast (a low area under the
curve). Insertion starts from a blurred copy of the input and puts the original pixels back in the same order; a
faithful map makes the probability rise fast (a high area). Maps are ranked by their value, highest first: a signed
map's most positive pixels, the evidence *for* the target, come first. A pixel is a position of ``S`` (``H, W``,
or ``T, H, W`` for video), all its channels at once.

Choices and departures from the paper:

- Deleted pixels become black by default (the caller passes the black image in normalized units, as the
  attribution baselines do); RISE's code sets them to 0 in normalized units, the mean colour.
- Insertion starts from a Gaussian blur of sigma 5 px at 224 px (scaled to the short side of a frame), as RISE
  blurs with sigma 5; RISE cuts its kernel at 11 px and pads with zeros, darkening the borders; here the kernel
  spans 3 sigma and the borders are replicated.
- The curves have ``steps + 1`` points, ``k = 0 .. steps`` (RISE: a step per 224 pixels); the area is the
  trapezoid rule over ``k / steps`` in [0, 1], so it lies in [0, 1] as the probabilities do.
- All points of all rows run in a few forward passes, at most :data:`_BATCH` inputs each (2 x rows x (steps + 1)
  inputs in all); ``steps`` is capped at :data:`MAX_FAITHFULNESS_STEPS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import restore_mode

__all__ = ["MAX_FAITHFULNESS_STEPS", "Faithfulness", "blur", "deletion_insertion"]

MAX_FAITHFULNESS_STEPS = 64
_BATCH = 32  # inputs per forward pass
_SIGMA_AT_224 = 5.0


@dataclass(frozen=True)
class Faithfulness:
    """``deletion`` and ``insertion`` ``[N, steps + 1]``: the target's probability after ``k`` steps;
    ``deletion_auc`` and ``insertion_auc`` ``[N]``: the areas under them."""

    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """A Gaussian blur of each frame of ``x`` ``[N, C, *S]`` over its last two dimensions (``H, W``), borders
    replicated; ``sigma`` in pixels, default 5 px at a short side of 224 px, scaled to the frame."""
    h, w = x.shape[-2:]
    if sigma is None:
        sigma = _SIGMA_AT_224 * min(h, w) / 224
    radius = math.ceil(3 * sigma)
    if sigma <= 0 or radius == 0:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    flat = F.pad(x.reshape(-1, 1, h, w), (radius,) * 4, mode="replicate")
    flat = F.conv2d(F.conv2d(flat, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))  # separable: rows, columns
    return flat.reshape(x.shape)


def _area(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid rule over ``k / steps`` in [0, 1]."""
    steps = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * steps)


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 16,
    deleted: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    batch: int = _BATCH,
) -> Faithfulness:
    """Deletion and insertion curves of ``maps`` ``[N, *S]`` for the normalized input ``x`` ``[N, C, *S]``.

    Args:
        targets: ``[N]`` the class whose probability the curves follow.
        steps: points after the first (1 .. :data:`MAX_FAITHFULNESS_STEPS`, default 16): after step ``k`` the top
            ``round(k / steps x pixels)`` pixels are deleted, or inserted.
        deleted: what deleted pixels become, broadcastable to ``x`` (the black image, in normalized units);
            default zeros (the mean image).
        start: what insertion starts from, shaped as ``x``; default :func:`blur` of ``x``.
    """
    if not 1 <= steps <= MAX_FAITHFULNESS_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_FAITHFULNESS_STEPS}, got {steps}")
    if maps.shape != x.shape[:1] + x.shape[2:]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match inputs {tuple(x.shape)}")
    n, pixels = len(x), maps[0].numel()
    x = x.detach()
    deleted = torch.zeros_like(x) if deleted is None else deleted.to(x).expand_as(x)
    start = blur(x) if start is None else start.to(x).expand_as(x)
    # rank[i, p]: the place of pixel p in row i's order, highest value first (ties: the earlier pixel first)
    order = maps.detach().flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(n, pixels))
    rank = rank.view(n, 1, *x.shape[2:])  # one place for every channel of a pixel
    counts = [round(k * pixels / steps) for k in range(steps + 1)]
    points = [(curve, i, k) for curve in (0, 1) for i in range(n) for k in range(steps + 1)]
    probs = torch.empty(2, n, steps + 1)
    with restore_mode(model, train=False), torch.inference_mode():
        for begin in range(0, len(points), batch):
            chunk = points[begin : begin + batch]
            rows = []
            for curve, i, k in chunk:
                top = rank[i] < counts[k]
                rows.append(torch.where(top, deleted[i], x[i]) if curve == 0 else torch.where(top, x[i], start[i]))
            p = model(torch.stack(rows)).float().softmax(-1)
            picked = p[torch.arange(len(chunk)), targets[[i for _, i, _ in chunk]].to(p.device)].cpu()
            for (curve, i, k), value in zip(chunk, picked, strict=True):
                probs[curve, i, k] = value
    return Faithfulness(probs[0], probs[1], _area(probs[0]), _area(probs[1]))
