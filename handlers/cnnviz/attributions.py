"""Gradient attributions through Captum, and the Zeiler & Fergus deconvnet projection of one channel.

Captum does the work (it is the attribution library TorchServe's own explanations use, and it removes its ReLU
hooks itself); this module picks targets per row, bounds memory, and reduces attributions ``[N, 3, *S]`` to maps
``[N, *S]`` (``S`` is ``H, W``, or ``T, H, W`` for video):

====================== =============================================== ==============================
method                 Captum                                          map
====================== =============================================== ==============================
vanilla                ``Saliency`` (Simonyan et al. 2014)             max over channels of abs
smoothgrad             ``NoiseTunnel(Saliency)`` (Smilkov et al. 2017) max over channels of abs
integrated_gradients   ``IntegratedGradients`` (Sundararajan 2017)     sum over channels, then abs
guided_backprop        ``GuidedBackprop`` (Springenberg et al. 2015)   max over channels of abs
deconvnet              ``Deconvolution`` (Zeiler & Fergus 2014)        max over channels of abs
====================== =============================================== ==============================

Departures: SmoothGrad's noise is given as a fraction of the batch's input range (the paper's sigma / (max - min)),
not in Captum's raw input units; the integrated-gradients baseline defaults to a black image (in normalized units,
not Captum's zero tensor, which is the mean-grey image).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    IntegratedGradients,
    NeuronDeconvolution,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from .capture import LayerHooks, restore_mode

__all__ = ["BASELINES", "SALIENCY_METHODS", "attribution_map", "baseline", "deconv_projection", "saliency"]

SALIENCY_METHODS = ("vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "deconvnet")
#: Integrated-gradients starting points: ``black`` and ``white`` images, or ``zero`` in normalized units (the mean
#: image, Captum's default).
BASELINES = ("black", "zero", "white")
_INTERNAL_BATCH = 32  # inputs per forward pass for integrated gradients and SmoothGrad, to bound memory


def _quiet(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    # Captum warns each time it hooks ReLUs; we know, and it removes them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
        return fn()


def baseline(kind: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor | None:
    """The normalized input of a black (0) or white (1) image, ``[C, 1, ...]`` broadcastable to an input, from the
    normalization ``mean`` and ``std`` ``[C]``; ``None`` for ``zero`` (Captum's default zero tensor)."""
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")
    if kind == "zero":
        return None
    value = 0.0 if kind == "black" else 1.0
    return (value - mean) / std


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    *,
    samples: int = 16,
    noise: float = 0.15,
    steps: int = 32,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attributions ``[N, C, *S]`` of each row's target class (a logit) to the normalized input ``x`` ``[N, C, *S]``.

    Args:
        targets: ``[N]`` class indices (long).
        method: one of :data:`SALIENCY_METHODS`.
        samples: SmoothGrad noisy copies per image (default 16).
        noise: SmoothGrad noise, as a fraction of the input range (default 0.15, the paper's 10-20%).
        steps: integrated-gradients steps (default 32).
        baseline: integrated-gradients start, broadcastable to ``x`` (see :func:`baseline`); default zeros.
    """
    x = x.detach().clone().requires_grad_(True)
    target = targets.tolist()
    with restore_mode(model, train=False), torch.enable_grad():
        if method == "vanilla":
            return Saliency(model).attribute(x, target=target, abs=False).detach()
        if method == "smoothgrad":
            sigma = noise * float(x.detach().max() - x.detach().min())
            tunnel = NoiseTunnel(Saliency(model))
            chunk = max(1, _INTERNAL_BATCH // len(x))  # noisy copies per pass, so samples x batch stays bounded
            attributions = tunnel.attribute(
                x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=chunk, stdevs=sigma, target=target
            )
            return attributions.detach()
        if method == "integrated_gradients":
            base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x).to(x)
            ig = IntegratedGradients(model)
            attributions = ig.attribute(
                x, baselines=base, target=target, n_steps=steps, internal_batch_size=max(_INTERNAL_BATCH, len(x))
            )
            return attributions.detach()
        if method == "guided_backprop":
            return _quiet(lambda: GuidedBackprop(model).attribute(x, target=target)).detach()
        if method == "deconvnet":
            return _quiet(lambda: Deconvolution(model).attribute(x, target=target)).detach()
    raise ValueError(f"unknown saliency method {method!r}; methods: {', '.join(SALIENCY_METHODS)}")


def attribution_map(attributions: torch.Tensor, method: str) -> torch.Tensor:
    """``[N, C, *S]`` -> ``[N, *S]`` >= 0, as the table in this module's docstring says."""
    if method == "integrated_gradients":
        return attributions.sum(dim=1).abs()
    return attributions.abs().amax(dim=1)


def deconv_projection(
    model: nn.Module, x: torch.Tensor, layer: str, channels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeiler & Fergus: project one channel of ``layer`` back to pixels through the deconvnet.

    The channel's rectified feature map (all other channels zero) is sent down the network with the deconvnet rules:
    max-unpooling through the pooling switches (the gradient of max pooling), ReLU applied to the signal (Captum's
    ``Deconvolution`` rule), and transposed convolution with the same filters (the gradient of convolution).

    Args:
        x: normalized input ``[N, C, *S]``.
        channels: ``[N]`` channel per row; ``None`` or ``-1`` picks each row's most active channel (largest single
            activation, as Z&F chose their top activations).

    Returns:
        ``(projection [N, C, *S], channels [N], activation [N])`` where ``activation`` is the channel's peak.
    """
    with torch.inference_mode(), LayerHooks(model, [layer], stop=True) as hooks:
        hooks.run(x)
    acts = hooks.outputs[layer]
    peaks = acts.flatten(2).amax(2)  # [N, C]
    best = peaks.argmax(1)
    chosen = best if channels is None else torch.where(channels.to(best.device) < 0, best, channels.to(best.device))
    rows = torch.arange(x.shape[0], device=x.device)

    def selector(output: torch.Tensor) -> torch.Tensor:
        fmap = output[rows, chosen]
        return (fmap * fmap.detach().clamp_min(0)).flatten(1).sum(1)  # gradient: the rectified map itself

    xg = x.detach().clone().requires_grad_(True)
    with restore_mode(model, train=False), torch.enable_grad():
        projection = _quiet(
            lambda: NeuronDeconvolution(model, dict(model.named_modules())[layer]).attribute(xg, selector)
        )
    return projection.detach(), chosen, peaks[rows, chosen]
