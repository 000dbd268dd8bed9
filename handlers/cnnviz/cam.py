"""Class activation maps: the CAM methods of pytorch-grad-cam, batched, one target per row.

A map comes from one layer's output ``A [N, C, *S]`` (``S`` is ``h, w`` for images, ``t, h, w`` for video) and, for
the gradient methods, the gradient ``G = dy_t / dA`` of each row's target score ``y_t`` (the logit, before softmax,
as in the papers). Each method weights the activations, ``W = w_c A_c`` with one weight per channel or ``W = f(G, A)``
element by element, and the map is ``cam = ReLU(sum_c W_c)`` (with ``eigen_smooth``: ReLU of the projection of
``W`` on its first principal component), resized to the input by bilinear (trilinear for video) interpolation.

==================== ======================================= ===============================================
method               paper                                   ``W``
==================== ======================================= ===============================================
gradcam              Selvaraju et al. 2017                   ``mean(G_c) A_c``
gradcam++            Chattopadhay et al. 2018                ``sum(alpha_c ReLU(G_c)) A_c``
guided_gradcam       Selvaraju et al. 2017                   Grad-CAM, times guided backprop at the input
hirescam             Draelos & Carin 2020                    ``G A``
gradcam_elementwise  pytorch-grad-cam's GradCAMElementWise   ``ReLU(G A)``
xgradcam             Fu et al. 2020                          ``sum(G_c A_c) / (sum(A_c) + eps) A_c``
layercam             Jiang et al. 2021                       ``ReLU(G) A``
eigencam             Muhammad & Yeasin 2020                  ``A``, always projected (no gradient)
eigengradcam         pytorch-grad-cam's EigenGradCAM         ``G A``, always projected
scorecam             Wang et al. 2020                        ``(y_t(x * M_c) - y_t(0)) A_c``, no gradient
ablationcam          Desai & Ramaswamy 2020                  ``(y_t - y_t(A without c)) / |y_t| A_c``
fullgrad             Srinivas & Fleuret 2019                 no layer: input and bias gradients of every layer
==================== ======================================= ===============================================

Where this departs from the papers, or from other libraries:

- ``A`` is the layer's own output even when the next module is an in-place ReLU (AlexNet, VGG): the hook hands the
  rest of the network a copy, so the captured tensor and its gradient are the layer's.
- The map is not normalized here. :class:`CamResult` keeps the maximum, so maps compare across images; the edge
  scales to [0, 1] only to draw. pytorch-grad-cam scales every map to [0, 1].
- Grad-CAM++ uses the closed form of its paper's exponential-score derivation (alpha from G^2 and G^3), as the
  authors' code and pytorch-grad-cam do.
- Guided Grad-CAM multiplies the CAM by the guided-backpropagation map (the maximum over colour channels of its
  absolute value); the paper multiplies per colour channel and shows an RGB image.
- The principal component (Eigen-CAM, EigenGrad-CAM, ``eigen_smooth``) is that of the positions as samples, centred
  per channel as pytorch-grad-cam does (the Eigen-CAM paper projects the raw activations); its sign, which the SVD
  leaves open, is chosen so that the map's largest magnitude is positive (Seg-Eigen-CAM's rule; pytorch-grad-cam
  leaves it to the SVD, so its map can come out inverted).
- The other departures are in each class's docstring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .capture import LayerHooks, restore_mode
from .errors import InputTooLarge, OverBudget
from .inference import wait_for

__all__ = [
    "AUGMENTATIONS",
    "CAM_METHODS",
    "MAX_PASSES",
    "AblationCAM",
    "BaseCAM",
    "CamResult",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LayerPass",
    "PerturbationCAM",
    "ScoreCAM",
    "XGradCAM",
    "first_component",
    "upsample",
]

_EPS = 1e-7
#: aug_smooth's copies of the input, ``(flip, factor)``: pytorch-grad-cam's default test-time augmentation (ttach's
#: horizontal flip times its multiplication of the input's values by 0.9, 1 and 1.1).
AUGMENTATIONS = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))
#: Masked or ablated forward passes one call of Score-CAM or Ablation-CAM may run (rows x channels), by default.
MAX_PASSES = 2048
# Ablation-CAM's copies of the layer's output in one batch, in elements (64 MiB of float32): ResNet18's layer4 (25,088
# elements a copy) ablates all 512 channels in one pass of the layers above, after one of the layers below.
_ABLATION_ELEMENTS = 2**24


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


@dataclass
class LayerPass:
    """What one pass through the model gives a CAM: the input ``x [N, C, *S]``, each row's target ``[N]``, the
    ``logits [N, K]``, the layer's ``activations [N, C, *s]`` (detached) and their ``gradients`` (``None`` for the
    methods that use none)."""

    x: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    activations: torch.Tensor
    gradients: torch.Tensor | None


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``[N, *s]`` -> ``[N, *size]``: bilinear for 2-D maps, trilinear for 3-D (``align_corners=False``)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[maps.dim() - 1]
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


def first_component(weighted: torch.Tensor) -> torch.Tensor:
    """``[N, C, *s]`` -> ``[N, *s]``: each row's positions, as samples of ``C`` features centred per feature, projected
    on their first principal component; the sign makes the largest magnitude positive."""
    flat = torch.nan_to_num(weighted.flatten(2).transpose(1, 2).float())  # [N, P, C]
    flat = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vh[:, 0, :, None])[..., 0]  # [N, P]
    sign = torch.where(proj.amax(1) >= -proj.amin(1), 1.0, -1.0)
    return (sign[:, None] * proj).view(weighted.shape[0], *weighted.shape[2:])


def _spread(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Channel weights ``[N, C]`` times ``activations [N, C, *s]``."""
    return weights[(...,) + (None,) * (activations.dim() - 2)] * activations


def _resolve(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    top1 = logits.argmax(1)
    return top1 if targets is None else torch.where(targets.to(top1.device) < 0, top1, targets.to(top1.device))


class BaseCAM:
    """Maps for ``model`` from the output of the module named ``layer`` (from ``model.named_modules()``).

    Subclasses override one of: :meth:`channel_weights` (one weight per channel, from ``A`` and ``G``),
    :meth:`weighted` (the weighted activations, element by element, from a whole :class:`LayerPass`),
    :meth:`refine` (post-processing at input resolution), or :meth:`maps` (a method that reads no layer).
    """

    #: Whether the maps need ``G``; without, the pass runs without autograd.
    uses_gradients: ClassVar[bool] = True
    #: Whether the map is always the first principal component of ``W`` (Eigen-CAM), whatever ``eigen_smooth``.
    eigen: ClassVar[bool] = False

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer = model, layer

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """``[N, C, *s]`` x2 -> ``[N, C]``."""
        raise NotImplementedError

    def weighted(self, p: LayerPass) -> torch.Tensor:
        """The weighted activations ``W [N, C, *s]``; default: :meth:`channel_weights` times ``A``."""
        return _spread(self.channel_weights(p.activations, p.gradients), p.activations)

    def refine(self, x: torch.Tensor, cams: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Hook for variants that post-process the upsampled maps ``[N, *S]`` (Guided Grad-CAM); default: as is."""
        return cams

    def __call__(
        self,
        x: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> CamResult:
        """Maps for a batch.

        Args:
            x: normalized input ``[N, C, *S]`` (``[N, 3, H, W]``, or ``[N, 3, T, H, W]`` for video) on the model's
                device.
            targets: class per row ``[N]`` (long); ``-1`` or ``None`` means the row's top-1 class.
            aug_smooth: the mean of the maps of the :data:`AUGMENTATIONS` of ``x`` (flipped maps flipped back), all
                for the target of ``x`` itself, in one batch of ``6 N`` rows; ``logits`` are those of ``x``.
                pytorch-grad-cam scales each copy's map to [0, 1] before the mean and lets each copy pick its own
                top-1 class.
            eigen_smooth: the map is the first principal component of ``W`` rather than its sum over channels
                (pytorch-grad-cam's ``eigen_smooth``; FullGrad: of its per-layer maps).

        The model runs in eval mode (its own modes are restored after), with gradients on whatever the caller's
        grad mode; no parameter gradient is accumulated.
        """
        if not aug_smooth:
            return self.maps(x, targets, eigen_smooth)
        if targets is None or bool((targets < 0).any()):
            with restore_mode(self.model, train=False), torch.no_grad():
                targets = _resolve(self.model(x), targets)
        n, copies = len(x), len(AUGMENTATIONS)
        batch = torch.cat([(x.flip(-1) if flip else x) * f for flip, f in AUGMENTATIONS])
        result = self.maps(batch, targets.repeat(copies), eigen_smooth)
        cams = result.cams.unflatten(0, (copies, n))
        back = torch.stack([c.flip(-1) if flip else c for c, (flip, _) in zip(cams, AUGMENTATIONS, strict=True)])
        plain = AUGMENTATIONS.index((False, 1.0))
        return CamResult(back.mean(0), result.logits[plain * n : (plain + 1) * n], result.targets[:n])

    def maps(self, x: torch.Tensor, targets: torch.Tensor | None, eigen_smooth: bool = False) -> CamResult:
        """The maps of one pass (no augmentation)."""
        p = self.capture(x, targets)
        w = self.weighted(p)
        cams = first_component(w) if eigen_smooth or self.eigen else w.sum(1)
        cams = self.refine(x, upsample(F.relu(cams), x.shape[2:]), p.targets)
        return CamResult(cams.clamp_min(0), p.logits, p.targets)

    def capture(self, x: torch.Tensor, targets: torch.Tensor | None) -> LayerPass:
        """One forward pass (and for :attr:`uses_gradients`, one backward pass from the layer up)."""
        grad = self.uses_gradients
        with (
            restore_mode(self.model, train=False),
            torch.enable_grad() if grad else torch.no_grad(),
            LayerHooks(self.model, [self.layer], keep="graph" if grad else "copy") as hooks,
        ):
            logits = hooks.run(x)
            t = _resolve(logits, targets)
            activations = hooks.outputs[self.layer]
            gradients = None
            if grad:
                score = logits.gather(1, t[:, None]).sum()  # rows are independent: each row's gradient is its own
                (gradients,) = torch.autograd.grad(score, activations)
        return LayerPass(x, t, logits.detach(), activations.detach(), gradients)


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


class HiResCAM(BaseCAM):
    """Draelos & Carin 2020, https://arxiv.org/abs/2011.08891: ``W = G A`` element by element, so that the map sums
    to the target's score through the layer for a model that pools and classifies linearly after it."""

    def weighted(self, p):
        return p.gradients * p.activations


class GradCAMElementWise(BaseCAM):
    """pytorch-grad-cam's GradCAMElementWise (no paper): ``W = ReLU(G A)``."""

    def weighted(self, p):
        return F.relu(p.gradients * p.activations)


class XGradCAM(BaseCAM):
    """Fu et al. 2020, https://arxiv.org/abs/2008.02312: ``w_c = sum(G_c A_c) / (sum(A_c) + eps)``. The paper
    assumes ``A >= 0`` (a layer after its ReLU); for a layer with negative outputs the sum can be near 0 and the
    weight large."""

    def channel_weights(self, activations, gradients):
        space = tuple(range(2, gradients.dim()))
        return (gradients * activations).sum(space) / (activations.sum(space) + _EPS)


class LayerCAM(BaseCAM):
    """Jiang et al. 2021, https://ieeexplore.ieee.org/document/9462463: ``W = ReLU(G) A``, for one layer (the paper
    also combines the maps of several layers)."""

    def weighted(self, p):
        return F.relu(p.gradients) * p.activations


class EigenCAM(BaseCAM):
    """Muhammad & Yeasin 2020, https://arxiv.org/abs/2008.00299: the first principal component of ``A``, no
    gradient, so the map is the same for every target (the entry's target and score still are the asked class's)."""

    uses_gradients = False
    eigen = True

    def weighted(self, p):
        return p.activations


class EigenGradCAM(BaseCAM):
    """pytorch-grad-cam's EigenGradCAM (no paper): the first principal component of ``G A``, class-specific."""

    eigen = True

    def weighted(self, p):
        return p.gradients * p.activations


class PerturbationCAM(BaseCAM):
    """Base of Score-CAM and Ablation-CAM: one weight per channel from a forward pass per channel and row, run in
    batches (:attr:`batch_size`; Ablation-CAM's are larger) without autograd.

    Args:
        max_passes: a call whose rows x channels is over this raises :class:`~cnnviz.InputTooLarge` before any
            pass (aug_smooth's copies are rows).
        deadline: a ``time.monotonic()`` time; before each batch, a call whose passes so far say it would end later
            raises :class:`~cnnviz.OverBudget` (``None``: no limit).
        batch_size: inputs a pass (default :attr:`batch_size`, 16).
    """

    uses_gradients = False
    batch_size: ClassVar[int] = 16  # pytorch-grad-cam's Score-CAM batch; peak memory grows with it

    def __init__(
        self, model: nn.Module, layer: str, *, max_passes: int = MAX_PASSES, deadline: float | None = None,
        batch_size: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(model, layer)
        self.max_passes, self.deadline = max_passes, deadline
        if batch_size is not None:  # fewer inputs a pass where memory is short
            self.batch_size = max(1, batch_size)

    def channel_scores(self, p: LayerPass) -> torch.Tensor:
        """``[N, C]`` channel weights."""
        raise NotImplementedError

    def weighted(self, p):
        return _spread(self.channel_scores(p), p.activations)

    def sweep(
        self, p: LayerPass, scores: Callable[[int, torch.Tensor], torch.Tensor], batch: int | None = None
    ) -> torch.Tensor:
        """``scores(row, channels)`` (the target's scores ``[k]``, one per channel of ``channels [k]`` perturbed
        alone) for every row and channel, ``batch`` channels at a time (default :attr:`batch_size`), within the
        caps: ``[N, C]``.

        A channel that is zero everywhere scores 0 without a pass: masking the input by it (Score-CAM) leaves the
        all-zero input, whose score is the baseline's, and zeroing it (Ablation-CAM) changes nothing. After a ReLU
        such channels are common; pytorch-grad-cam runs them anyway.
        """
        n, c = p.activations.shape[:2]
        batch = batch or self.batch_size
        name = type(self).__name__
        if n * c > self.max_passes:  # the cap counts every channel: it is known before any pass
            raise InputTooLarge(
                f"{name} runs one forward pass per channel and input: {n} inputs x {c} channels of layer "
                f"{self.layer!r} is {n * c} passes, over the cap of {self.max_passes}"
            )
        live = p.activations.flatten(2).ne(0).any(2).cpu()  # [N, C]
        total = int(live.sum())
        out = torch.zeros(n, c, device=p.activations.device)
        started, done = time.monotonic(), 0
        for row in range(n):
            for part in live[row].nonzero()[:, 0].split(batch):
                self._pace(started, done, total, n, c, p.activations.device)
                out[row, part] = scores(row, part.to(p.activations.device))
                done += len(part)
        return out

    def _pace(self, started: float, done: int, total: int, n: int, c: int, device: torch.device) -> None:
        if self.deadline is None:
            return
        wait_for(device)  # the passes so far, done (a GPU queues them)
        now = time.monotonic()
        per_pass = (now - started) / done if done else 0.0
        if now + per_pass * (total - done) > self.deadline:
            estimate, budget = per_pass * total, max(0.0, self.deadline - started)
            pace = f"at {per_pass:.3f} s a pass that is about {estimate:.0f} s" if done else "no time is left"
            skipped = f", {n * c - total} channels that are zero everywhere skipped" if total < n * c else ""
            raise OverBudget(
                f"{type(self).__name__} runs one forward pass per channel and input ({n} x {c} channels of layer "
                f"{self.layer!r}: {total} passes{skipped}); {pace}, over the {budget:.0f} s this batch may take "
                f"(max_busy_seconds): name a layer with fewer channels, send fewer inputs, or use a gradient method "
                f"such as gradcam",
                budget_s=round(budget, 1), **({"estimate_s": round(estimate, 1)} if done else {}),
            )  # fmt: skip


class ScoreCAM(PerturbationCAM):
    """Wang et al. 2020, https://arxiv.org/abs/1910.01279: each channel, upsampled to the input and min-max scaled to
    [0, 1], masks the input; ``w_c`` is the target's logit for the masked input minus its logit for the baseline
    (the all-zero input: the mean image), the paper's channel-wise increase of confidence.

    Departure: the logit, where the authors' code takes the target's softmax probability over classes and
    pytorch-grad-cam a softmax over channels of the target's logits (weights summing to 1); the logit is in the
    units of the other methods and does not saturate when the class is certain. On the shapes model (200 images,
    layer ``features``) all three hit within 4 px every time; inside the box itself: 0.835 (this), 0.885
    (probability), 0.845 (softmax over channels). Costs ``C`` forward passes a row (capped, see
    :class:`PerturbationCAM`).
    """

    def channel_scores(self, p):
        x, a, model = p.x, p.activations, self.model
        with restore_mode(model, train=False), torch.no_grad():
            baseline = model(torch.zeros_like(x[:1]))[0]

            def scores(row, channels):
                masks = upsample(a[row, channels], x.shape[2:]).flatten(1)
                low, high = masks.amin(1, keepdim=True), masks.amax(1, keepdim=True)
                masks = ((masks - low) / (high - low + 1e-8)).view(len(channels), *x.shape[2:])
                t = p.targets[row]
                return model(x[row] * masks[:, None])[:, t] - baseline[t]

            return self.sweep(p, scores)


class AblationCAM(PerturbationCAM):
    """Desai & Ramaswamy 2020 (WACV): ``w_c = (y_t - y_t^c) / |y_t|`` where ``y_t^c`` is the target's logit with
    channel ``c`` of the layer set to zero.

    Departures: divided by ``|y_t|`` (the paper's ``y_t`` where it is positive) so that a channel whose removal
    lowers the score counts for the class also for a target with a negative logit. The layers below run once per
    batch of ablations (as many copies of the layer's output as fit in :data:`_ABLATION_ELEMENTS`, at least
    :attr:`batch_size`), each copy with one channel zeroed; where the layers above cannot take a batch larger than
    the input's (they combine the layer's output with an earlier tensor), the input is repeated instead,
    :attr:`batch_size` at a time. Costs ``C`` passes of the layers above a row (capped, see
    :class:`PerturbationCAM`).
    """

    def channel_scores(self, p):
        a, model = p.activations, self.model
        y = p.logits.gather(1, p.targets[:, None])[:, 0]
        repeat = [False]  # the layers above took a larger batch than the input's, until they do not

        def scores(row, channels):
            k = len(channels)
            ablated = a[row].expand(k, *a.shape[1:]).clone()
            ablated[torch.arange(k), channels] = 0
            edit = {"now": ablated}
            with LayerHooks(model, [self.layer], keep="shape", edit=lambda _name, _out: edit["now"]) as hooks:
                if not repeat[0]:
                    try:
                        logits = hooks.run(p.x[row : row + 1])
                        if logits is not None and logits.shape[0] == k:
                            return logits[:, p.targets[row]]
                    except RuntimeError:
                        pass
                    repeat[0] = True
                out = []
                for part in ablated.split(self.batch_size):  # the whole network runs on each copy: smaller batches
                    edit["now"] = part
                    out.append(hooks.run(p.x[row : row + 1].expand(len(part), *p.x.shape[1:]))[:, p.targets[row]])
                return torch.cat(out)

        per_copy = a[0].numel()
        batch = max(self.batch_size, min(a.shape[1], _ABLATION_ELEMENTS // max(1, per_copy)))
        with restore_mode(model, train=False), torch.no_grad():
            dropped = self.sweep(p, scores, batch)
        return (y[:, None] - dropped) / y.abs().clamp_min(_EPS)[:, None]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a convolution or batch norm adds (batch norm in eval: ``beta - mean gamma / sqrt(var + eps)``)."""
    if isinstance(module, _CONVS):
        return module.bias
    if isinstance(module, _NORMS):
        if module.running_mean is None:
            return module.bias
        gamma = module.weight if module.weight is not None else 1.0
        beta = module.bias if module.bias is not None else 0.0
        return beta - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
    return None


def _psi(t: torch.Tensor) -> torch.Tensor:
    """FullGrad's post-processing of ``[N, C, *s]``: absolute value, min-max scaled to [0, 1] per row, summed over
    channels: ``[N, *s]``."""
    a = t.abs().flatten(1)
    a = a - a.amin(1, keepdim=True)
    a = a / (a.amax(1, keepdim=True) + 1e-6)
    return a.view(t.shape).sum(1)


class FullGrad(BaseCAM):
    """Srinivas & Fleuret 2019, https://arxiv.org/abs/1905.00780: ``psi(dy_t/dx * x)`` plus, for every convolution
    and batch norm with a bias and an output of the input's rank, ``psi(dy_t/dz * b)`` upsampled (``z`` the layer's
    output, ``b`` its bias), summed; ``psi`` is the authors' code's post-processing (:func:`_psi`).

    ``layer`` is ignored: every such layer counts (a module called several times: its last call). Departures:
    pytorch-grad-cam min-max scales each channel on its own, the authors' code (and this) each layer's whole map;
    ``eigen_smooth`` projects the per-layer maps at input resolution (pytorch-grad-cam: at 1/8 of it).
    """

    def maps(self, x, targets, eigen_smooth=False):
        modules = dict(self.model.named_modules())
        names = [n for n, m in modules.items() if _bias(m) is not None]
        with (
            restore_mode(self.model, train=False),
            torch.enable_grad(),
            LayerHooks(self.model, names, keep="graph") as hooks,
        ):
            xg = x.detach().requires_grad_()
            logits = hooks.run(xg)
            t = _resolve(logits, targets)
            kept = [n for n in names if n in hooks.outputs and hooks.outputs[n].dim() == x.dim()]
            score = logits.gather(1, t[:, None]).sum()
            grads = torch.autograd.grad(score, [xg] + [hooks.outputs[n] for n in kept], allow_unused=True)
        parts = [_psi(grads[0] * x)]
        for name, g in zip(kept, grads[1:], strict=True):
            if g is not None:
                parts.append(upsample(_psi(_spread(_bias(modules[name]).detach()[None], g)), x.shape[2:]))
        stack = torch.stack(parts, 1)
        cams = F.relu(first_component(stack)) if eigen_smooth else stack.sum(1)
        return CamResult(cams.detach().clamp_min(0), logits.detach(), t)


#: CAM methods by the name requests use.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "guided_gradcam": GuidedGradCAM,
    "hirescam": HiResCAM,
    "gradcam_elementwise": GradCAMElementWise,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
}
