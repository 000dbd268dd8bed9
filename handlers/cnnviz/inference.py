"""One forward pass that classifies and captures feature maps at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .capture import LayerHooks

__all__ = ["forward", "wait_for"]


def wait_for(device: torch.device) -> None:
    """Wait until ``device`` has done the work queued on it: a CUDA device runs kernels after the call that queued
    them returns, so a step timed without this (job budgets, the calibration, a time cap) measures the queueing.
    Names the device: the current one of a thread may be another GPU than the model's. Nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] = ()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class probabilities and layer outputs for a batch, from a single forward pass.

    Args:
        model: a classifier returning logits ``[N, K]``; run as it is (call ``model.eval()`` first).
        x: normalized input ``[N, C, *S]`` on the model's device.
        layers: names from ``model.named_modules()`` whose outputs to keep (validated by the caller).

    Returns:
        ``(probs [N, K], {layer: output [N, ...]})``, softmax over the logits, on ``x``'s device. Runs under
        ``torch.inference_mode()``.
    """
    with torch.inference_mode(), LayerHooks(model, layers) as hooks:
        logits = hooks.run(x)
    return logits.softmax(dim=-1), dict(hooks.outputs)
