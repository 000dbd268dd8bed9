"""Activation maximization ("preferred images"): parameterization -> transforms -> model -> objective.

K targets are optimized together as one batch: one forward and one backward per step for all K images, each row
with its own objective (rows never mix, so each row's gradient is its own, except through a diversity term, which
compares the images of one target).

- Parameterization: the image lives in [0, 1] (a sigmoid of the parameters) and is normalized inside the graph.
  ``pixel`` parameters are the image's logits; ``fft`` parameters are a Fourier spectrum scaled by 1/frequency and
  colour-decorrelated, as in Lucid (Olah et al. 2017) and lucent, with their constants.
- Transforms (transformation robustness): pad, jitter, scale, rotate, jitter, drawn anew each step, the same for the
  whole batch (lucent's defaults, scaled to the image size).
- Objectives (:mod:`cnnviz.objectives`): terms that compose into weighted sums: a channel's mean activation, one
  unit's activation, a direction in a layer's channel space, Lucid's Gram-matrix diversity, or a class's score: its
  log-probability (log-softmax, as the seed notebooks' cross-entropy loss does; this module's default), its logit
  (Lucid), or its margin over the best other class (the HTTP service's default: it does not saturate once the class
  wins, as the log-probability does, and cannot rise by raising every class, as a logit can; measured on the motion
  and shapes examples with judges trained apart, docs/methods.md, "Activation maximization").
- Regularizers: L2 decay and L1 ("no ink") towards mid-grey, total variation, a pull towards an initial image, and a
  Gaussian blur of pixel parameters every k steps (cnnpref). Departure: the blur is not applied to ``fft`` parameters,
  whose 1/f scaling already favours low frequencies.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .capture import LayerHooks, restore_mode
from .inference import wait_for
from .objectives import Objective, Target, Term, _Hooked

__all__ = [
    "ActmaxResult", "FeatureMatch", "Objective", "Optimization", "Settings", "Target", "actmax", "fft_image",
    "invert", "pixel_image", "robustness_transforms", "shared_copy",
]  # fmt: skip

# Lucid's colour correlation (square root of the ImageNet colour covariance, by SVD), normalized by its largest norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_FFT_MAGIC = 4.0  # lucent/Lucid's divisor that keeps the initial image's contrast low


@dataclass
class ActmaxResult:
    images: torch.Tensor  # [K, 3, H, W] in [0, 1]; videos [K, 3, T, H, W]
    start: torch.Tensor  # [K] objective on the first image, before any step
    end: torch.Tensor  # [K] objective on the final image
    steps: int
    seconds: float
    stopped_early: bool


# -- parameterizations: each returns (parameters to optimize, a function giving images in [0, 1]) ---------------------
# Images are [K, 3, H, W]; with ``frames`` videos [K, 3, T, H, W] (``frames=None`` for images).


def _to_rgb(t: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if decorrelate:
        t = torch.einsum("kc...,dc->kd...", t, _COLOR.to(t))
    return torch.sigmoid(t)


def _from_rgb(img: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    t = torch.logit(img.clamp(1e-3, 1 - 1e-3))
    if decorrelate:
        t = torch.einsum("kd...,cd->kc...", t, torch.linalg.inv(_COLOR).to(t))
    return t


def _shape(size: int, frames: int | None) -> tuple[int, ...]:
    return (size, size) if frames is None else (frames, size, size)


def pixel_image(
    k: int, size: int, *, init: torch.Tensor | None = None, sd: float = 0.0, decorrelate: bool = True,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu", frames: int | None = None,
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:  # fmt: skip
    """Pixels as logits. ``init`` ``[3, H, W]`` in [0, 1] starts every row from that image; else ``sd`` * noise
    (0: uniform mid-grey, the seed notebooks' zero image)."""
    if init is not None:
        param = _from_rgb(init.to(device)[None].expand(k, *init.shape).clone(), decorrelate)
    else:
        param = torch.randn(k, 3, *_shape(size, frames), generator=generator).to(device) * sd
    param.requires_grad_(True)
    return [param], lambda: _to_rgb(param, decorrelate)


def _freqs(shape: tuple[int, ...], device) -> torch.Tensor:
    """``|f|`` on the grid of ``rfftn`` over ``shape`` (cycles per sample on every axis, the last one halved)."""
    axes = [torch.fft.fftfreq(n, device=device) for n in shape[:-1]] + [torch.fft.rfftfreq(shape[-1], device=device)]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def fft_image(
    k: int, size: int, *, init: torch.Tensor | None = None, sd: float = 0.01, decay_power: float = 1.0,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu", frames: int | None = None,
    time_cycles: float = 0.0,
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:  # fmt: skip
    """A decorrelated Fourier spectrum, scaled by ``1 / max(f, 1/size) ** decay_power`` (Lucid's ``fft_image``).
    Departure for video: the spectrum is 3-D (``rfftn`` over time and space), so slow changes in time are favoured
    as smooth patterns are in space. ``time_cycles`` > 0 (video only) divides it further by ``1 + (f_t /
    time_cycles) ** 2``, ``f_t`` in cycles per clip: a temporal low-pass (a prior that what is seen persists over
    the clip; 0: none). Why: with 1/f alone the motion example's preferred "rotating" video was a patch flickering
    for a few frames that a second model read as "up"; at 1 cycle per clip it was read as rotating in 4 of 6 seeds
    (1 of 5 without), at 0.5 (the service's video default) in 6 of 6, with every other class
    (docs/models.md, "Video")."""
    shape = _shape(size, frames)
    dims = tuple(range(-len(shape), 0))
    scale = 1.0 / torch.clamp(_freqs(shape, device), min=1.0 / size) ** decay_power
    if frames is not None and time_cycles > 0:
        f_t = torch.fft.fftfreq(frames, device=device).abs().view(-1, 1, 1) * frames  # [T, 1, 1] cycles per clip
        scale = scale / (1 + (f_t / time_cycles) ** 2)
    if init is not None:
        t = _from_rgb(init.to(device)[None].expand(k, *init.shape), True) * _FFT_MAGIC
        spec = torch.view_as_real(torch.fft.rfftn(t, dim=dims, norm="ortho") / scale).clone()
    else:
        spec = torch.randn(k, 3, *shape[:-1], shape[-1] // 2 + 1, 2, generator=generator).to(device) * sd
    spec.requires_grad_(True)

    def image() -> torch.Tensor:
        t = torch.fft.irfftn(torch.view_as_complex(spec) * scale, s=shape, dim=dims, norm="ortho") / _FFT_MAGIC
        return _to_rgb(t, True)

    return [spec], image


# -- transforms ----------------------------------------------------------------------------------------------------


def _framewise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn`` of images ``[N, C, H, W]`` applied to a video batch ``[K, C, T, H, W]`` with its frames folded into
    the batch (one call for all frames, so one random draw for all of them); images go to ``fn`` as they are."""
    if x.dim() != 5:
        return fn(x)
    k, c, t = x.shape[:3]
    out = fn(x.transpose(1, 2).reshape(k * t, c, *x.shape[-2:]))
    return out.reshape(k, t, c, *out.shape[-2:]).transpose(1, 2)


def robustness_transforms(
    size: int, generator: torch.Generator, time_jitter: int = 0, strength: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """lucent's default robustness, in pixels scaled from 224: pad 12 (grey), jitter 8, scale 0.9..1.1,
    rotate -10..10 degrees, jitter 4; ``strength`` multiplies every one of these (2: pad 24, scale 0.8..1.2,
    rotate -20..20 degrees, ...). One random draw per call, shared by the batch. A video ``[K, 3, T, H, W]``
    gets the same spatial draw on every frame (the motion stays), and with ``time_jitter`` a circular shift in time
    by up to that many frames either way (cnnpref's ``jitter_z``)."""
    s = size / 224 * strength

    def ints(n: int) -> int:
        return int(torch.randint(0, max(1, n), (1,), generator=generator))

    def jitter(x: torch.Tensor, d: int) -> torch.Tensor:
        if d < 1:
            return x
        dy, dx = ints(d), ints(d)
        return x[..., dy : x.shape[-2] - d + dy, dx : x.shape[-1] - d + dx]

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and time_jitter:
            x = torch.roll(x, ints(2 * time_jitter + 1) - time_jitter, dims=2)
        return _framewise(spatial, x)  # one spatial draw for every frame

    def spatial(x: torch.Tensor) -> torch.Tensor:
        pad = round(12 * s)
        x = F.pad(x, (pad, pad, pad, pad), value=0.5)
        x = jitter(x, round(8 * s))
        spread = max(1, round(5 * strength))  # scale steps of 0.02, rotation in degrees
        scale = 1 + (ints(2 * spread + 1) - spread) / 50
        angle = math.radians(ints(4 * spread + 1) - 2 * spread)
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return jitter(x, round(4 * s))

    return apply


def _gaussian_blur(x: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Each frame ``[..., H, W]`` blurred in space."""
    if x.dim() == 5:
        return _framewise(_gaussian_blur, x)
    r = max(1, math.ceil(2 * sigma))
    k = torch.exp(-((torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2) / 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per row ``[K]``: the mean absolute difference of neighbouring pixels, down and across (every frame)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(
        1
    ).mean(1)


def _temporal_variation(x: torch.Tensor) -> torch.Tensor:
    """Per row ``[K]``: the mean absolute change from one frame to the next of a video ``[K, 3, T, H, W]`` (the
    temporal regularizer of Feichtenhofer et al., "Deep Insights into Convolutional Networks for Video Recognition",
    IJCV 2019, who vary its weight to separate slow from fast features); 0 for images."""
    if x.dim() < 5 or x.shape[2] < 2:
        return x.new_zeros(len(x))
    return (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)


@dataclass(frozen=True)
class Settings:
    """How to optimize (defaults in brackets).

    size [224]: image side. steps [256]. param ["fft"] or "pixel". optimizer ["adam"] or "sgd" (momentum 0.9), lr
    [0.05]. transforms [True]: :func:`robustness_transforms` each step. l2, l1 [0]: penalties on ``image - 0.5``;
    tv [0]: total variation; blur_every [0]: blur pixel parameters every this many steps. init [None]: ``[3, H, W]``
    in [0, 1] to start from (DeepDream-like), init_weight [0] pulls the result towards it; without it init_noise
    [None: 0 for pixels, mid-grey as the seed notebooks' zero image; Lucid's 0.01 for fft]. seed [0]: noise and
    transforms repeat. mean, std [ImageNet]: normalization inside the graph. budget_s [None]: stop after this many
    seconds and return what there is. Video: frames [None: an image] makes the result ``[K, 3, frames, size,
    size]``; time_jitter [0]: circular shifts in time by up to this many frames each step; tv_time [0]: penalty on
    the change from frame to frame (Feichtenhofer et al.'s temporal regularizer); time_cycles [0: none]: the fft
    parameterization's temporal low-pass, in cycles per clip (:func:`fft_image`). classes ["logprob"], "logit" or
    "margin": what a class target maximizes. strength [1]: multiplies the transforms' sizes (pad, jitter, scale,
    rotation). copies [1]: transformed copies per step (each its own draw; their gradients averaged).
    """

    size: int = 224
    steps: int = 256
    param: str = "fft"
    optimizer: str = "adam"
    lr: float = 0.05
    transforms: bool = True
    l2: float = 0.0
    l1: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    init: torch.Tensor | None = None
    init_noise: float | None = None
    init_weight: float = 0.0
    seed: int = 0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    budget_s: float | None = None
    precision: str = "float32"
    frames: int | None = None
    time_jitter: int = 0
    tv_time: float = 0.0
    time_cycles: float = 0.0
    classes: str = "logprob"
    strength: float = 1.0
    copies: int = 1


Progress = Callable[[int, torch.Tensor, Callable[[], torch.Tensor]], None]


class Optimization:
    """The loop shared by :func:`actmax` and :func:`invert`, one step at a time, so that a scheduler can interleave
    several optimizations and stop one between steps: ``objective`` maps a normalized batch to ``[K]``.

    Construction sets up the parameters and scores the first image (one forward pass); :meth:`step` runs one step;
    :meth:`finish` scores the final image and releases the hooks (:meth:`close` releases them without a result).
    The model's parameters must not need gradients while it runs (they get none: gradients flow to the image only);
    its hooks are its own, so two optimizations must not share one module tree (:func:`shared_copy`).
    """

    def __init__(self, model: nn.Module, k: int, objective: Objective | FeatureMatch, cfg: Settings) -> None:
        self.started = time.perf_counter()
        self.cfg, self.objective, self.model = cfg, objective, model
        device = next(model.parameters()).device
        self.generator = gen = torch.Generator().manual_seed(cfg.seed)  # noise, then every transform's draw
        init = cfg.init
        if init is not None and init.dim() == 3 and tuple(init.shape[-2:]) != (cfg.size, cfg.size):
            init = F.interpolate(init[None], size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)[0]
        noise = cfg.init_noise if cfg.init_noise is not None else (0.01 if cfg.param == "fft" else 0.0)
        extra = {"time_cycles": cfg.time_cycles} if cfg.param == "fft" else {}
        make = {"fft": fft_image, "pixel": pixel_image}[cfg.param]
        self.params, self.image = make(k, cfg.size, init=init, sd=noise, generator=gen, device=device,
                                       frames=cfg.frames, **extra)  # fmt: skip
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        else:
            self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=0.9)
        self.jitter = (
            robustness_transforms(cfg.size, gen, cfg.time_jitter, cfg.strength) if cfg.transforms else (lambda x: x)
        )
        self.copies = max(1, cfg.copies) if cfg.transforms else 1  # copies of one untransformed image: the same
        # A batch of 1 or 2 images uses a CPU's matrix units poorly: there, copies go through the model together, up
        # to 4 images a pass (AlexNet, 1 class at 128 px, 2 copies: 58 ms a step, 69 ms in two passes). Larger
        # batches keep one pass per copy, as measured for the defaults (numerics differ slightly between the two).
        self.passes = [self.copies] if k * self.copies <= 4 else [1] * self.copies  # copies a pass
        spread = (1, 3) + (1,) * (2 if cfg.frames is None else 3)
        self.m = torch.tensor(cfg.mean, device=device).view(spread)
        self.s = torch.tensor(cfg.std, device=device).view(spread)
        self.anchor = init.to(device)[None] if init is not None else None
        self.layout = torch.channels_last if cfg.frames is None else torch.channels_last_3d  # faster on CPU
        self.device = device
        self.done = 0
        self.value: torch.Tensor | None = None  # the objective of the last step [K]
        self._frozen = [p.requires_grad for p in model.parameters()]
        self._half = _half_weights(model) if cfg.precision == "bfloat16" else []
        self._open = True
        self._mode = restore_mode(model, train=False)
        try:
            for p in model.parameters():
                p.requires_grad_(False)  # gradients flow to the image only
            self._mode.__enter__()
            objective.__enter__()
            with torch.no_grad():
                self.start = self._score(self.image(), exact=True).detach()
            wait_for(device)  # the set-up is timed (calibration): done when it returns
        except BaseException:
            self.close()
            raise

    def _score(self, img: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """The objective ``[K]`` of ``img``; in ``cfg.precision`` for the steps, in float32 when ``exact`` (the
        reported start and end: at bfloat16's 8 bits a class score of -6.9 reads -6.875 before and after)."""
        x = ((img - self.m) / self.s).contiguous(memory_format=self.layout)
        half = self.cfg.precision == "bfloat16" and not exact
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=half):
            return self.objective(x).float()

    @property
    def finished(self) -> bool:
        return self.done >= self.cfg.steps

    def step(self) -> torch.Tensor:
        """One step; returns the objective of the transformed image it optimized ``[K]``."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        value = torch.zeros(())
        with torch.enable_grad(), _swapped(self._half):
            for n in self.passes:  # n copies in one batch; one backward per pass: graphs do not pile up
                img = self.image()
                views = [self.jitter(img) for _ in range(n)]  # each copy its own draw
                v = self._score(views[0] if n == 1 else torch.cat(views)).view(n, -1).mean(0)  # [K]
                centred = (img - 0.5).flatten(1)
                penalty = cfg.l2 * (centred**2).mean(1) + cfg.l1 * centred.abs().mean(1)
                penalty = penalty + cfg.tv * _total_variation(img) + cfg.tv_time * _temporal_variation(img)
                if self.anchor is not None and cfg.init_weight:
                    penalty = penalty + cfg.init_weight * ((img - self.anchor) ** 2).flatten(1).mean(1)
                share = n / self.copies
                ((penalty - v).sum() * share).backward()  # rows are independent: each its own gradient
                value = value + v.detach() * share
            self.opt.step()
        if cfg.blur_every and cfg.param == "pixel" and (self.done + 1) % cfg.blur_every == 0:
            with torch.no_grad():
                self.params[0].copy_(_gaussian_blur(self.params[0]))
        self.done += 1
        self.value = value.detach()
        wait_for(self.device)  # a step is timed (budgets, calibration): done when it returns
        return self.value

    def finish(self, stopped_early: bool) -> ActmaxResult:
        """Score the final image, release the hooks, and return the result."""
        try:
            with torch.no_grad():
                final = self.image().detach()
                end = self._score(final, exact=True).detach()
        finally:
            self.close()
        return ActmaxResult(final, self.start, end, self.done, time.perf_counter() - self.started, stopped_early)

    def run(self, progress: Progress | None = None) -> ActmaxResult:
        """All steps in a row. With ``cfg.budget_s``, a step is started only if the time spent plus the longest step
        so far fits the budget (the first step only if the setup fits it); ``progress(step, objective, images)``
        after each step."""
        budget, longest = self.cfg.budget_s, 0.0
        try:
            while not self.finished:
                if budget is not None and time.perf_counter() - self.started + longest > budget:
                    return self.finish(True)
                t0 = time.perf_counter()
                value = self.step()
                longest = max(longest, time.perf_counter() - t0)
                if progress is not None:
                    progress(self.done, value, self.image)
            return self.finish(False)
        finally:
            self.close()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly where this one is (``torch.save``-able, loadable with
        ``weights_only=True``; tensors on the CPU): the parameters, the optimizer's state, the step, the random
        generator's state (the transforms still to draw) and the first image's objective ``start``."""
        return {
            "step": self.done,
            "params": [p.detach().cpu().clone() for p in self.params],
            "optimizer": self.opt.state_dict(),
            "generator": self.generator.get_state(),
            "start": self.start.detach().cpu().clone(),
            "value": None if self.value is None else self.value.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from :meth:`state_dict` of a run of the same model, targets and settings: the steps after it
        are the ones that run would have made (bit for bit on the CPU). Raises ``ValueError`` when the
        parameters' shapes differ (another size, number of targets or parameterization)."""
        params = state["params"]
        shapes = [tuple(p.shape) for p in self.params]
        if [tuple(p.shape) for p in params] != shapes:
            raise ValueError(
                f"this checkpoint's parameters have shapes {[tuple(p.shape) for p in params]}, this optimization's "
                f"{shapes}: it is of another optimization (size, targets or parameterization differ)"
            )
        if not 0 <= int(state["step"]) <= self.cfg.steps:
            raise ValueError(f"this checkpoint is at step {state['step']}, outside 0..{self.cfg.steps}")
        with torch.no_grad():
            for p, saved in zip(self.params, params, strict=True):
                p.copy_(saved)
        self.opt.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.start = state["start"].to(self.device)
        self.value = None if state["value"] is None else state["value"].to(self.device)
        self.done = int(state["step"])

    def checkpoint(self) -> bytes:
        """:meth:`state_dict` as bytes (``torch.save``); :meth:`restore` reads them."""
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def restore(self, data: bytes) -> None:
        """Go on from :meth:`checkpoint`'s bytes (read with ``weights_only=True``: tensors and plain values only,
        never code)."""
        self.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))

    def close(self) -> None:
        """Hooks off, the model's mode and parameter flags back (idempotent)."""
        if not self._open:
            return
        self._open = False
        try:
            self.objective.__exit__(None, None, None)
            self._mode.__exit__(None, None, None)
        finally:
            for p, was in zip(self.model.parameters(), self._frozen, strict=True):
                p.requires_grad_(was)


_CAST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # what autocast runs in bfloat16 among the weighted layers


def _half_weights(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
    """``(parameter, its data, a bfloat16 copy)`` for the float32 weights and biases of ``model``'s convolutions and
    linear layers: autocast casts them on every forward (its cache lasts one autocast region, one step), which cost
    AlexNet's 58M classifier weights 150 ms a step here, 3 times the step itself at 128 px; cast once, they are
    already bfloat16 and autocast leaves them. Costs a bfloat16 copy of those weights while the optimization runs."""
    seen: set[int] = set()
    out = []
    for m in model.modules():
        if isinstance(m, _CAST):
            for p in m.parameters(recurse=False):
                if p.dtype == torch.float32 and id(p) not in seen:
                    seen.add(id(p))
                    out.append((p, p.data, p.data.to(torch.bfloat16)))
    return out


class _swapped:
    """Within: the parameters hold their bfloat16 copies (:func:`_half_weights`); after: their own data again."""

    def __init__(self, half: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]) -> None:
        self.half = half

    def __enter__(self) -> None:
        for p, _, h in self.half:
            p.data = h

    def __exit__(self, *exc) -> None:
        for p, full, _ in self.half:
            p.data = full


def _optimize(
    model: nn.Module, k: int, objective: Objective | FeatureMatch, cfg: Settings, progress: Progress | None
) -> ActmaxResult:
    return Optimization(model, k, objective, cfg).run(progress)


def shared_copy(model: nn.Module, hooks: bool = True, requires_grad: bool = False) -> nn.Module:
    """A copy of ``model``'s module tree whose parameters share the weights' memory (no memory for weights) but are
    tensors of their own that need no gradient, and whose hooks are its own: an optimization on the copy registers
    hooks that no other pass of ``model`` sees, and never changes a flag of ``model``'s parameters. Buffers are
    shared. Make it while no hooks are on ``model`` (they would be copied), or with ``hooks=False``: without any
    (to time passes of the model while others watch it). ``requires_grad``: each parameter needs a gradient where
    ``model``'s does (autograd then records a pass whose input needs none: Grad-CAM's; Captum asks for gradients
    with ``autograd.grad``, which fills no parameter's ``.grad``)."""
    memo: dict[int, object] = {id(b): b for b in model.buffers()}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=requires_grad and p.requires_grad)
    out = copy.deepcopy(model, memo)
    if not hooks:
        for m in out.modules():
            for table in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
                table.clear()
    return out


def actmax(
    model: nn.Module, targets: Sequence[Term], settings: Settings = Settings(), progress: Progress | None = None
) -> ActmaxResult:
    """One image per target, optimized together as one batch.

    ``targets``: one objective per image: a :class:`Target` or an expression of terms (:mod:`cnnviz.objectives`:
    ``0.5 * Target("features.10", 3) - Target("features.10", 7)``); layer names from ``model.named_modules()``;
    ``""`` is the model's output (class targets, scored as ``settings.classes`` says). ``progress`` is called
    after each step with ``(step, objective [K], images_fn)``. The model runs in eval mode (restored after) and its
    parameters get no gradients.
    """
    return _optimize(model, len(targets), Objective(model, targets, settings.classes), settings, progress)


def invert(
    model: nn.Module, x: torch.Tensor, layer: str, settings: Settings = Settings(transforms=False, tv=0.05),
    progress: Progress | None = None,
) -> ActmaxResult:  # fmt: skip
    """Feature inversion (Mahendran & Vedaldi 2015, as the seeds' "reconstruct by optimizer"): an image whose output
    at ``layer`` matches that of ``x`` (normalized ``[3, H, W]``). The objective is minus the relative squared error
    ``|f(image) - f(x)|^2 / |f(x)|^2``, so ``result.end`` is minus the final match error; the default smoothness prior
    is total variation (``tv=0.05``), without transforms."""
    return _optimize(model, 1, FeatureMatch(model, x, layer), settings, progress)


class FeatureMatch(_Hooked):
    """Minus the relative squared error between ``layer``'s output for a batch and for the image ``x``."""

    def __init__(self, model: nn.Module, x: torch.Tensor, layer: str) -> None:
        self.hooks = LayerHooks(model, [layer], keep="graph", stop=True)
        self.layer = layer
        with torch.no_grad(), self.hooks:
            self.hooks.run(x[None])
        self.goal = self.hooks.outputs[layer].detach()
        self.norm = self.goal.pow(2).sum().clamp_min(1e-12)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.hooks.run(batch)
        f = self.hooks.outputs[self.layer]
        if f.shape[-2:] != self.goal.shape[-2:]:  # transforms change the size
            f = F.interpolate(f, size=self.goal.shape[-2:], mode="bilinear", align_corners=False)
        return -((f - self.goal) ** 2).flatten(1).sum(1) / self.norm
