"""Class activation maps: Grad-CAM and Grad-CAM++, batched, one target per row.

A map comes from one layer's output ``A [N, C, h, w]`` and the gradient ``G = dy_t / dA`` of each row's target
score ``y_t`` (the logit, before softmax, as in the papers): ``cam = ReLU(sum_c w_c A_c)``, resized to the input by
bilinear interpolation. The subclasses differ only in the channel weights ``w``.

Where this departs from the papers, or from other libraries:
- ``A`` is the layer's own output even when the next module is an in-place ReLU (AlexNet, VGG): the hook hands the
  rest of the network a copy, so the captured tensor and its gradient are the layer's.
- The map is not normalized here. :class:`CamResult` keeps the maximum, so maps compare across images; the edge
  scales to [0, 1] only to draw.
- Grad-CAM++ uses the closed form of its paper's exponential-score derivation (alpha from G^2 and G^3), as the
  authors' code and pytorch-grad-cam do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import restore_mode

__all__ = ["BaseCAM", "CamResult", "GradCAM", "GradCAMPlusPlus", "capture_for_gradient"]

_EPS = 1e-7


@dataclass
class CamResult:
    """``cams [N, H, W]`` at input resolution (>= 0, unnormalized), ``logits [N, K]``, ``targets [N]``."""

    cams: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor

    @property
    def peaks(self) -> torch.Tensor:
        """Each map's maximum, ``[N]``."""
        return self.cams.flatten(1).amax(1)


@contextmanager
def capture_for_gradient(model: nn.Module, name: str) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the output of module ``name`` in the autograd graph under key ``"output"``.

    The hook returns a clone to the rest of the network, so an in-place op downstream changes the clone, never the
    captured tensor. Removed on exit, also on error.
    """
    module = dict(model.named_modules())[name]
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        store["output"] = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class BaseCAM:
    """Maps for ``model`` from the output of the module named ``layer`` (from ``model.named_modules()``)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer = model, layer

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` x2 -> ``[N, C]``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> CamResult:
        """Maps for a batch.

        Args:
            x: normalized input ``[N, 3, H, W]`` on the model's device.
            targets: class per row ``[N]`` (long); ``-1`` or ``None`` means the row's top-1 class.

        The model runs in eval mode (its own modes are restored after), with gradients on whatever the caller's
        grad mode; no parameter gradient is accumulated.
        """
        with (
            restore_mode(self.model, train=False),
            torch.enable_grad(),
            capture_for_gradient(self.model, self.layer) as store,
        ):
            logits = self.model(x)
            top1 = logits.argmax(1)
            t = top1 if targets is None else torch.where(targets.to(top1.device) < 0, top1, targets.to(top1.device))
            score = logits.gather(1, t[:, None]).sum()  # rows are independent: each row's gradient is its own
            activations = store["output"]
            (gradients,) = torch.autograd.grad(score, activations)
        activations = activations.detach()
        weights = self.channel_weights(activations, gradients)
        cams = F.relu((weights[:, :, None, None] * activations).sum(1))
        cams = F.interpolate(cams[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return CamResult(cams.clamp_min(0), logits.detach(), t)


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391: ``w_c`` = spatial mean of ``G_c``."""

    def channel_weights(self, activations, gradients):
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063: ``w_c = sum alpha_c ReLU(G_c)`` with
    ``alpha = G^2 / (2 G^2 + sum(A) G^3)`` (0 where ``G`` is 0)."""

    def channel_weights(self, activations, gradients):
        g2, g3 = gradients.pow(2), gradients.pow(3)
        denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(gradients != 0, g2 / torch.where(denom != 0, denom, torch.full_like(denom, _EPS)), 0.0)
        return (alpha * F.relu(gradients)).sum(dim=(2, 3))
