"""Class activation maps: Grad-CAM and Grad-CAM++, batched, one target per row.

A map comes from one layer's output ``A [N, C, *S]`` (``S`` is ``h, w`` for images, ``t, h, w`` for video) and the
gradient ``G = dy_t / dA`` of each row's target score ``y_t`` (the logit, before softmax, as in the papers):
``cam = ReLU(sum_c w_c A_c)``, resized to the input by bilinear (trilinear for video) interpolation. The subclasses
differ only in the channel weights ``w``.

Where this departs from the papers, or from other libraries:
- ``A`` is the layer's own output even when the next module is an in-place ReLU (AlexNet, VGG): the hook hands the
  rest of the network a copy, so the captured tensor and its gradient are the layer's.
- The map is not normalized here. :class:`CamResult` keeps the maximum, so maps compare across images; the edge
  scales to [0, 1] only to draw.
- Grad-CAM++ uses the closed form of its paper's exponential-score derivation (alpha from G^2 and G^3), as the
  authors' code and pytorch-grad-cam do.
- Guided Grad-CAM multiplies the CAM by the guided-backpropagation map (the maximum over colour channels of its
  absolute value); the paper multiplies per colour channel and shows an RGB image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import LayerHooks, restore_mode

__all__ = ["CAM_METHODS", "BaseCAM", "CamResult", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "upsample"]

_EPS = 1e-7


@dataclass
class CamResult:
    """``cams [N, *S]`` at input resolution (>= 0, unnormalized), ``logits [N, K]``, ``targets [N]``."""

    cams: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor

    @property
    def peaks(self) -> torch.Tensor:
        """Each map's maximum, ``[N]``."""
        return self.cams.flatten(1).amax(1)


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``[N, *s]`` -> ``[N, *size]``: bilinear for 2-D maps, trilinear for 3-D (``align_corners=False``)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[maps.dim() - 1]
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


class BaseCAM:
    """Maps for ``model`` from the output of the module named ``layer`` (from ``model.named_modules()``)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer = model, layer

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """``[N, C, *s]`` x2 -> ``[N, C]``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> CamResult:
        """Maps for a batch.

        Args:
            x: normalized input ``[N, C, *S]`` (``[N, 3, H, W]``, or ``[N, 3, T, H, W]`` for video) on the model's
                device.
            targets: class per row ``[N]`` (long); ``-1`` or ``None`` means the row's top-1 class.

        The model runs in eval mode (its own modes are restored after), with gradients on whatever the caller's
        grad mode; no parameter gradient is accumulated.
        """
        with (
            restore_mode(self.model, train=False),
            torch.enable_grad(),
            LayerHooks(self.model, [self.layer], keep="graph") as hooks,
        ):
            logits = hooks.run(x)
            top1 = logits.argmax(1)
            t = top1 if targets is None else torch.where(targets.to(top1.device) < 0, top1, targets.to(top1.device))
            score = logits.gather(1, t[:, None]).sum()  # rows are independent: each row's gradient is its own
            activations = hooks.outputs[self.layer]
            (gradients,) = torch.autograd.grad(score, activations)
        activations = activations.detach()
        weights = self.channel_weights(activations, gradients)
        spread = (...,) + (None,) * (activations.dim() - 2)
        cams = F.relu((weights[spread] * activations).sum(1))
        cams = self.refine(x, upsample(cams, x.shape[2:]), t)
        return CamResult(cams.clamp_min(0), logits.detach(), t)

    def refine(self, x: torch.Tensor, cams: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Hook for variants that post-process the upsampled maps ``[N, *S]`` (Guided Grad-CAM); default: as is."""
        return cams


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391: ``w_c`` = spatial mean of ``G_c``."""

    def channel_weights(self, activations, gradients):
        return gradients.flatten(2).mean(2)


class GradCAMPlusPlus(BaseCAM):
    """Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063: ``w_c = sum alpha_c ReLU(G_c)`` with
    ``alpha = G^2 / (2 G^2 + sum(A) G^3)`` (0 where ``G`` is 0)."""

    def channel_weights(self, activations, gradients):
        space = tuple(range(2, gradients.dim()))
        g2, g3 = gradients.pow(2), gradients.pow(3)
        denom = 2 * g2 + activations.sum(dim=space, keepdim=True) * g3
        alpha = torch.where(gradients != 0, g2 / torch.where(denom != 0, denom, torch.full_like(denom, _EPS)), 0.0)
        return (alpha * F.relu(gradients)).sum(dim=space)


class GuidedGradCAM(GradCAM):
    """Selvaraju et al. 2017, section 3.1: the Grad-CAM map times the guided-backpropagation map of the same target
    (Springenberg et al. 2015, through Captum), both at input resolution."""

    def refine(self, x, cams, targets):
        from .attributions import attribution_map, saliency  # attributions imports Captum: only when needed

        guided = saliency(self.model, x, targets, "guided_backprop")
        return attribution_map(guided, "guided_backprop") * cams


#: CAM methods by the name requests use.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "guided_gradcam": GuidedGradCAM,
}
