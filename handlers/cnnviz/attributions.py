"""Attributions through Captum, and the Zeiler & Fergus deconvnet projection of one channel.

Captum does the work (it is the attribution library TorchServe's own explanations use, and it removes its hooks
itself); this module picks targets per row, bounds memory and the number of forward passes, and reduces
attributions ``[N, 3, *S]`` to maps ``[N, *S]`` (``S`` is ``H, W``, or ``T, H, W`` for video):

==================== ====================================================== ====================================
method               Captum                                                 map
==================== ====================================================== ====================================
vanilla              ``Saliency`` (Simonyan et al. 2014)                    max over channels of abs
smoothgrad           ``NoiseTunnel(Saliency)`` (Smilkov et al. 2017)        max over channels of abs
smoothgrad_sq        ``NoiseTunnel(Saliency)``, ``smoothgrad_sq``           max over channels (>= 0)
vargrad              ``NoiseTunnel(Saliency)``, ``vargrad`` (Adebayo 2018)  max over channels (>= 0)
integrated_gradients ``IntegratedGradients`` (Sundararajan et al. 2017)     sum over channels, signed
input_x_gradient     ``InputXGradient`` (Shrikumar et al. 2016)             sum over channels, signed
deeplift             ``DeepLift``, rescale rule (Shrikumar et al. 2017)     sum over channels, signed
deepliftshap         ``DeepLiftShap`` (Lundberg & Lee 2017)                 sum over channels, signed
gradientshap         ``GradientShap`` (Lundberg & Lee 2017)                 sum over channels, signed
lrp                  ``LRP``, Captum's default rules (Bach et al. 2015)     sum over channels, signed
occlusion            ``Occlusion`` (Zeiler & Fergus 2014)                   the patch's logit drop, signed
feature_ablation     ``FeatureAblation`` over a grid of square patches      the patch's logit drop, signed
guided_backprop      ``GuidedBackprop`` (Springenberg et al. 2015)          max over channels of abs
deconvnet            ``Deconvolution`` (Zeiler & Fergus 2014)               max over channels of abs
==================== ====================================================== ====================================

Signed maps (:data:`SIGNED_METHODS`) keep the sign: positive where the pixels speak for the target.

Departures and choices:

- Noise (SmoothGrad and its variants) is a fraction of the batch's input range (the paper's sigma / (max - min)),
  not Captum's raw input units; it is drawn from a fixed seed, so that a batch gives the same map each time.
  ``smoothgrad`` averages absolute gradients (Captum's ``Saliency`` default); ``smoothgrad_sq`` averages squared
  gradients and ``vargrad`` is their variance, of the signed gradients as in the papers.
- Baselines (integrated gradients, DeepLift, the SHAP methods, occlusion, feature ablation) default to a black
  image (in normalized units; Captum's zero tensor is the mean-grey image).
- ``deepliftshap`` and ``gradientshap`` draw their baselines from the chosen baseline plus Gaussian noise
  (``samples`` baselines, ``noise`` as for SmoothGrad): without a data set at hand, a cloud around the one reference
  image stands in for SHAP's background distribution; with ``noise=0`` they are DeepLift and an expected gradient
  along the straight path from that baseline. ``gradientshap`` adds no noise to the input (Captum's ``stdevs=0``).
- DeepLift (and DeepLiftShap) need each activation module to run once a pass: where a model calls one module
  several times (ResNet's shared ``relu``), it runs on a copy of the model in which each call has a module of its
  own (the weights are shared, not copied). In-place ReLUs are fine as they are: Captum 0.9's DeepLift copies a
  module's input before it runs. Activations Captum has no DeepLift rule for (SiLU, GELU, ReLU6, Hardswish, and
  ``F.relu`` in a ``forward``) pass the plain gradient, as Captum does.
- LRP uses Captum's default rules (epsilon 1e-9 on every layer, so LRP-0), not the composite rules of Montavon et
  al. 2019. Captum's rules cover modules only: a model with a module it has no rule for, a module that runs twice
  a pass, or arithmetic between modules other than reshaping and concatenation (ResNet's residual additions) is
  refused (:func:`lrp_problem`) rather than answered with relevance that is not conserved.
- Occlusion slides a patch of side ``window`` x the short side of the frame, ``stride`` x the patch apart;
  feature ablation removes the patches of a grid of that side, one at a time. A video's patch spans every frame (a
  tube): its map says where, not when. Each pixel's value is the target logit's drop when its patch is replaced by
  the baseline (occlusion: the mean over the patches that cover it). :func:`perturbations` counts the forward
  passes an input costs; over ``max_perturbations``, :func:`saliency` refuses the input before running any.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from captum.attr import (
    LRP,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NeuronDeconvolution,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

# Captum's own tables of what its DeepLift and LRP have rules for (pinned Captum 0.9: private but stable).
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR as _DEEPLIFT_RULES
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES as _LRP_RULES
from captum.attr._core.lrp import SUPPORTED_NON_LINEAR_LAYERS as _LRP_PASSED
from torch import fx, nn

from .actmax import shared_copy
from .capture import LayerHooks, restore_mode
from .errors import InputTooLarge

__all__ = [
    "BASELINES",
    "SALIENCY_METHODS",
    "SIGNED_METHODS",
    "attribution_map",
    "baseline",
    "deconv_projection",
    "lrp_problem",
    "perturbations",
    "saliency",
]

SALIENCY_METHODS = (
    "vanilla", "smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients", "input_x_gradient", "deeplift",
    "deepliftshap", "gradientshap", "lrp", "occlusion", "feature_ablation", "guided_backprop", "deconvnet",
)  # fmt: skip
#: Methods whose maps keep the sign of the attribution (the others are >= 0).
SIGNED_METHODS = (
    "integrated_gradients", "input_x_gradient", "deeplift", "deepliftshap", "gradientshap", "lrp", "occlusion",
    "feature_ablation",
)  # fmt: skip
#: Methods that cost one forward pass per patch (:func:`perturbations`).
PERTURBATION_METHODS = ("occlusion", "feature_ablation")
#: Reference inputs: ``black`` and ``white`` images, or ``zero`` in normalized units (the mean image, Captum's
#: default).
BASELINES = ("black", "zero", "white")
_INTERNAL_BATCH = 32  # inputs per forward pass (noisy copies, path steps, baselines, patches), to bound memory
_SEED = 0


def _quiet(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    # Captum warns each time it hooks ReLUs (guided backprop, deconvnet, DeepLift); we know, and it removes them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Setting forward, backward hooks", category=UserWarning)
        return fn()


@contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Captum draws noise from torch's and numpy's global generators: seed those it uses here (the CPU's, the
    input's GPU, numpy's) for the block, then restore them."""
    state = np.random.get_state()
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(_SEED)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(_SEED)
        np.random.seed(_SEED)
        try:
            yield
        finally:
            np.random.set_state(state)


def baseline(kind: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor | None:
    """The normalized input of a black (0) or white (1) image, ``[C, 1, ...]`` broadcastable to an input, from the
    normalization ``mean`` and ``std`` ``[C]``; ``None`` for ``zero`` (Captum's default zero tensor)."""
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")
    if kind == "zero":
        return None
    value = 0.0 if kind == "black" else 1.0
    return (value - mean) / std


def patches(shape: Sequence[int], window: float, stride: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Patch and stride sizes over ``S`` (``shape`` is ``x.shape[2:]``) for occlusion and feature ablation.

    The patch is square, ``window`` x the short side of a frame (at least 1 pixel); the stride is ``stride`` x the
    patch side. A clip's patch spans all its frames (``T``).
    """
    *time, h, w = (int(s) for s in shape)
    side = max(1, min(round(window * min(h, w)), h, w))
    step = max(1, round(stride * side))
    return (*time, side, side), (*time, step, step)


def perturbations(method: str, shape: Sequence[int], window: float = 0.125, stride: float = 0.5) -> int:
    """Forward passes (per input) that occlusion or feature ablation makes on an input of ``S = shape``; 0 for the
    other methods. Occlusion counts the patch positions as Captum places them (a last, partial patch at an edge
    the stride does not reach); feature ablation counts the cells of its grid."""
    if method not in PERTURBATION_METHODS:
        return 0
    sizes, steps = patches(shape, window, stride)
    if method == "feature_ablation":
        return math.prod(math.ceil(s / p) for s, p in zip(shape, sizes, strict=True))
    return math.prod(math.ceil((s - p) / t) + 1 for s, p, t in zip(shape, sizes, steps, strict=True))


def _grid(x: torch.Tensor, side: tuple[int, ...]) -> torch.Tensor:
    """Feature ablation's mask ``[1, 1, *S]``: each cell of a grid of ``side`` patches is one feature (0, 1, ...)."""
    *_, h, w = x.shape
    rows = torch.arange(h, device=x.device) // side[-2]
    cols = torch.arange(w, device=x.device) // side[-1]
    cells = rows[:, None] * math.ceil(w / side[-1]) + cols[None, :]
    return cells.view((1,) * (x.dim() - 2) + (h, w))


class _EachCall(nn.Module):
    """A module that a model calls ``n`` times a pass, as ``n`` copies that each run once, in turn (DeepLift keeps
    one input and output per module)."""

    def __init__(self, module: nn.Module, n: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(n))
        self.calls = 0

    def forward(self, *args):
        module = self.copies[self.calls % len(self.copies)]
        self.calls += 1
        return module(*args)


_REUSED: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


def _reused_activations(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """The modules DeepLift has a rule for that run more than once a pass, with their call count (cached per
    model: one probe pass of one input)."""
    if model not in _REUSED:
        names = [n for n, m in model.named_modules() if n and type(m) in _DEEPLIFT_RULES]
        with restore_mode(model, train=False), torch.inference_mode(), LayerHooks(model, names, keep="shape") as h:
            h.run(x[:1].detach())
        calls: dict[str, int] = {}
        for name, _, _ in h.events:
            calls[name] = calls.get(name, 0) + 1
        _REUSED[model] = {n: c for n, c in calls.items() if c > 1}
    return _REUSED[model]


def _for_deeplift(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model``, or where it calls an activation module several times a pass, a copy with a module for each call
    (the weights are shared with ``model``)."""
    reused = _reused_activations(model, x)
    if not reused:
        return model
    rewired = shared_copy(model)
    modules = dict(rewired.named_modules())
    for name, n in reused.items():
        parent, _, child = name.rpartition(".")
        modules[parent].register_module(child, _EachCall(modules[name], n))
    return rewired


_LRP_CHECKED: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()
# Operations between modules that only move relevance around (Captum's LRP passes relevance through them as a
# gradient, which for these is a routing of each value, so relevance stays conserved); ReLU's gradient only drops
# relevance where the output, and so the relevance, is 0.
_LRP_ROUTING = {
    "flatten", "reshape", "view", "cat", "concat", "relu", "size", "getitem", "getattr", "contiguous", "transpose",
    "permute", "squeeze", "unsqueeze", "chunk", "split", "dropout",
}  # fmt: skip


def lrp_problem(model: nn.Module) -> str | None:
    """Why Captum's LRP cannot explain ``model`` (``None`` if it can), as a sentence naming the module or operation.

    Captum attaches a rule to each leaf module by its type (convolutions, linear, pooling, 2-D batch norm; ReLU,
    dropout and tanh pass relevance on) and fails on other types; it keeps one state per module, so a module that
    runs twice a pass (ResNet's shared ``relu``) breaks it; and it has no rule for arithmetic outside modules, so
    a residual addition counts relevance twice. The graph is read with ``torch.fx`` (cached per model); a model
    fx cannot trace is refused too, since it cannot be checked.
    """
    if model in _LRP_CHECKED:
        return _LRP_CHECKED[model]
    problems = []
    for name, m in model.named_modules():
        if name and next(m.children(), None) is None and type(m) not in _LRP_RULES and type(m) not in _LRP_PASSED:
            problems.append(f"layer {name!r} is a {type(m).__name__}, which Captum's LRP has no rule for")
            break
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any failure to trace means the graph cannot be checked
        problems.append(f"torch.fx cannot trace the model to check it ({type(exc).__name__})")
        graph = fx.Graph()
    calls: dict[str, int] = {}
    arithmetic = None
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        elif node.op in ("call_function", "call_method") and arithmetic is None:
            op = node.target if isinstance(node.target, str) else node.target.__name__
            if op not in _LRP_ROUTING:
                inputs = ", ".join(a.target if a.op == "call_module" else a.name for a in node.all_input_nodes)
                why = "a residual connection" if op in ("add", "iadd") else "an operation"
                arithmetic = f"the network computes {op!r} outside its modules (of {inputs}): {why} LRP has no rule for"
    again = next(((n, c) for n, c in calls.items() if c > 1), None)
    if again:
        problems.append(f"module {again[0]!r} runs {again[1]} times a pass (Captum's LRP keeps one state a module)")
    if arithmetic:
        problems.append(arithmetic)
    _LRP_CHECKED[model] = "; ".join(problems) or None
    return _LRP_CHECKED[model]


def _averaged(total: int, chunk: int, fn: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """The mean of ``total`` samples computed ``chunk`` at a time: ``fn(start, k)`` is the mean of samples
    ``start .. start + k``."""
    out = None
    for start in range(0, total, chunk):
        k = min(chunk, total - start)
        part = fn(start, k) * (k / total)
        out = part if out is None else out + part
    return out


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
    window: float = 0.125,
    stride: float = 0.5,
    max_perturbations: int = 1024,
    batch: int = _INTERNAL_BATCH,
) -> torch.Tensor:
    """Attributions ``[N, C, *S]`` of each row's target class (a logit) to the normalized input ``x`` ``[N, C, *S]``.

    Args:
        targets: ``[N]`` class indices (long).
        method: one of :data:`SALIENCY_METHODS` (see the table of this module).
        samples: noisy copies per image (SmoothGrad and its variants), or baselines drawn (the SHAP methods);
            default 16.
        noise: their noise, as a fraction of the input range (default 0.15, SmoothGrad's 10-20%).
        steps: integrated-gradients steps (default 32).
        baseline: the reference input, broadcastable to ``x`` (see :func:`baseline`); default zeros.
        window: occlusion and feature ablation: the patch side as a fraction of the short side (default 1/8).
        stride: occlusion: the step between patches as a fraction of the patch side (default 1/2).
        max_perturbations: occlusion and feature ablation: the most forward passes one input may cost; over it,
            :class:`~cnnviz.InputTooLarge` before any pass.
        batch: the most inputs one pass holds, rows x samples (default 32): memory grows with it.
    """
    shape = tuple(x.shape[2:])
    count = perturbations(method, shape, window, stride)
    if count > max_perturbations:
        sizes, steps_ = patches(shape, window, stride)
        raise InputTooLarge(
            f"{method} of a {'x'.join(map(str, shape))} input with {sizes[-1]} px patches"
            + (f" every {steps_[-1]} px" if method == "occlusion" else "")
            + f" takes {count:,} forward passes; this server makes at most {max_perturbations:,} an input "
            f"(max_perturbations): ask for a larger 'window'" + (" or 'stride'" if method == "occlusion" else "")
        )
    x = x.detach().clone().requires_grad_(True)
    target = targets.tolist()
    base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x).to(x)
    chunk = max(1, batch // len(x))  # samples per pass, so that samples x batch stays bounded
    sigma = noise * float(x.detach().max() - x.detach().min())
    with restore_mode(model, train=False), torch.enable_grad():
        if method == "vanilla":
            return Saliency(model).attribute(x, target=target, abs=False).detach()
        if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            tunnel = NoiseTunnel(Saliency(model))
            with _seeded(x.device):
                attributions = tunnel.attribute(
                    x, nt_type=method, nt_samples=samples, nt_samples_batch_size=chunk, stdevs=sigma, target=target,
                    abs=method == "smoothgrad",  # Captum's Saliency default for SmoothGrad; the variants: signed
                )  # fmt: skip
            return attributions.detach()
        if method == "integrated_gradients":
            ig = IntegratedGradients(model)
            attributions = ig.attribute(
                x, baselines=base, target=target, n_steps=steps, internal_batch_size=max(batch, len(x))
            )
            return attributions.detach()
        if method == "input_x_gradient":
            return InputXGradient(model).attribute(x, target=target).detach()
        if method == "deeplift":
            net = _for_deeplift(model, x)
            return _quiet(lambda: DeepLift(net).attribute(x, baselines=base, target=target)).detach()
        if method in ("deepliftshap", "gradientshap"):
            with _seeded(x.device):
                drawn = base[:1] + sigma * torch.randn((samples, *x.shape[1:]), device=x.device, dtype=x.dtype)
                if method == "deepliftshap":
                    net = _for_deeplift(model, x)

                    def shap(start: int, k: int) -> torch.Tensor:
                        refs = drawn[start : start + k]
                        return _quiet(lambda: DeepLiftShap(net).attribute(x, baselines=refs, target=target)).detach()
                else:

                    def shap(start: int, k: int) -> torch.Tensor:
                        gs = GradientShap(model)
                        return gs.attribute(x, baselines=drawn, n_samples=k, stdevs=0.0, target=target).detach()

                return _averaged(samples, chunk, shap)
        if method == "lrp":
            # on a copy (weights shared): Captum leaves each layer's last inputs on its modules
            net = shared_copy(model)
            return _quiet(lambda: LRP(net).attribute(x, target=target)).detach()
        if method == "guided_backprop":
            return _quiet(lambda: GuidedBackprop(model).attribute(x, target=target)).detach()
        if method == "deconvnet":
            return _quiet(lambda: Deconvolution(model).attribute(x, target=target)).detach()
    if method in PERTURBATION_METHODS:
        sizes, steps_ = patches(shape, window, stride)
        with restore_mode(model, train=False), torch.no_grad():
            if method == "occlusion":
                return Occlusion(model).attribute(
                    x.detach(), sliding_window_shapes=(x.shape[1], *sizes), strides=(x.shape[1], *steps_),
                    baselines=base, target=target, perturbations_per_eval=chunk,
                )  # fmt: skip
            return FeatureAblation(model).attribute(
                x.detach(), baselines=base, target=target, feature_mask=_grid(x, sizes), perturbations_per_eval=chunk
            )
    raise ValueError(f"unknown saliency method {method!r}; methods: {', '.join(SALIENCY_METHODS)}")


def attribution_map(attributions: torch.Tensor, method: str) -> torch.Tensor:
    """``[N, C, *S]`` -> ``[N, *S]``, as the table in this module's docstring says: signed for
    :data:`SIGNED_METHODS`, >= 0 for the others."""
    if method in PERTURBATION_METHODS:
        return attributions.mean(dim=1)  # every channel of a patch holds the same drop
    if method in SIGNED_METHODS:
        return attributions.sum(dim=1)
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
