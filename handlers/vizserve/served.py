"""The model being served, with what every mode needs to know about it: spec, layer table, device, normalization."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnviz import LayerTable, ModelSpec

from .config import Limits

__all__ = ["Limits", "Served", "bf16_is_fast", "release_cached_memory", "smallest_input_side"]


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA device of compute capability 8.0 or more (Ampere on),
    a ROCm one, or a CPU with AVX512-BF16/AMX for oneDNN. Not ``torch.cuda.is_bf16_supported()``: it answers for
    the current device (cuda:0 in a worker given GPU 1) and counts the emulated bfloat16 of a T4 or V100."""
    try:
        if device.type == "cuda":
            return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _libc_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    return lambda: trim(0)


_TRIM = _libc_trim()


def release_cached_memory(device: torch.device) -> None:
    """Give back what a large piece of work (a job, a heavy batch) freed but its allocators keep: PyTorch's CUDA
    cache to the device (its peak, GBs for many targets at once, stays reserved by this process otherwise, out of
    reach of the other workers TorchServe runs on the same GPU, one process each), and glibc's freed heap pages to
    the system (``malloc_trim``: the job thread's and the request thread's arenas keep what their tensors freed, so
    a worker's resident memory grew by its heaviest jobs' peaks together, 0.9 GB measured, and stayed there)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if _TRIM is not None:
        _TRIM()


def smallest_input_side(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """The smallest spatial side the model accepts, by bisection on square inputs (pooling layers set a floor);
    for models whose spec does not say (torchvision's weights do, as ``min_size``)."""
    upper = max(input_shape[-2:])

    def runs(side: int) -> bool:
        try:
            with torch.inference_mode():
                model(torch.zeros(1, *input_shape[:-2], side, side, device=device))
            return True
        except RuntimeError:
            return False

    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid + 1, hi)
    return lo


@dataclass
class Served:
    """One model as the modes see it.

    Attributes:
        model: in eval mode, on ``device``.
        spec: its :class:`cnnviz.ModelSpec`, default layers filled in.
        table: its :class:`cnnviz.LayerTable` for the spec's input shape.
        transform: decoded input (PIL image) -> normalized tensor ``spec.input_shape``.
        name: the served name (``alexnet_viz``).
        mean, std: the normalization, shaped to broadcast over one input (``[C, 1, 1]`` or ``[C, 1, 1, 1]``).
    """

    model: nn.Module
    spec: ModelSpec
    table: LayerTable
    transform: Callable[[Any], torch.Tensor]
    device: torch.device
    name: str
    limits: Limits = field(default_factory=Limits)
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)
    modules: dict[str, nn.Module] = field(init=False)
    bf16: bool = field(init=False)

    def __post_init__(self) -> None:
        spread = (-1,) + (1,) * self.spec.spatial_rank
        self.mean = torch.tensor(self.spec.preprocess.mean, dtype=torch.float32).view(spread)
        self.std = torch.tensor(self.spec.preprocess.std, dtype=torch.float32).view(spread)
        self.modules = dict(self.model.named_modules())
        self.bf16 = bf16_is_fast(self.device)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def seen(self, x: torch.Tensor) -> torch.Tensor:
        """A normalized input ``[C, *S]`` as the network saw it, in [0, 1] (for overlays and init images)."""
        return (x.detach().cpu() * self.std + self.mean).clamp(0, 1)

    def header(self) -> dict[str, Any]:
        """What every response starts with."""
        return {"model": self.name, "arch": self.spec.arch, "weights": self.spec.weights, "device": str(self.device)}
