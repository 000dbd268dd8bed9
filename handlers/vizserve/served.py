"""The model being served, with what every mode needs to know about it: spec, layer table, device, normalization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnviz import MAX_PASSES, LayerTable, ModelSpec

__all__ = ["Limits", "Served", "bf16_is_fast", "release_cached_memory", "smallest_input_side"]


@dataclass(frozen=True)
class Limits:
    """Caps an operator may change (model-config.yaml, ``handler:`` section)."""

    max_image_pixels: int = 50_000_000  # refused from the image header, before decoding
    max_input_side: int = 1024  # largest H or W of a .npy input
    max_response_bytes: int = 64 * 1024 * 1024  # keep equal to TorchServe's max_response_size
    # KServe's protocols (vizserve.kserve): instances (v2: image inputs) one request may carry, as many as one batch
    # of the plain API's archives holds, and the decoded size of one base64 image in them (TorchServe's
    # max_request_size bounds the whole body as well)
    max_instances: int = 8
    max_instance_bytes: int = 32 * 1024 * 1024
    # saliency by occlusion or feature ablation: the most forward passes (patches) one input may cost; more is
    # refused (413) before the first pass
    max_perturbations: int = 1024
    # Optimizations (actmax, invert) run as jobs beside the request path (vizserve.jobs): each job gets this many
    # seconds of compute (its steps' time, summed; in-process use without jobs: of wall time) and stops early with
    # what it has when the next step and the final encoding would not fit.
    max_busy_seconds: int = 90
    # gradcam's Score-CAM and Ablation-CAM run a forward pass per channel of 'layer' and input (aug_smooth: 6 inputs
    # an image): a request over this many is refused (413), a batch runs in parts of at most this many, and a part
    # estimated past max_busy_seconds of the batch is stopped (422)
    max_cam_passes: int = MAX_PASSES
    job_wall_seconds: int = 300  # a job's answer is ready at most this long after its submission
    max_jobs: int = 4  # jobs one worker holds at once; one more is answered 429
    job_keep_seconds: int = 600  # a finished job's answer is kept this long after it ends
    refuse_factor: int = 3  # a job whose estimate is over this many times max_busy_seconds is refused (422)
    # torch's intra-op threads of the job thread; the request thread gets the rest of the cores. 0: half the cores
    # (at least 1). Oversubscribed (1 + 2 threads on 2 cores) a classify beside a job took 4x longer (README).
    job_threads: int = 0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Limits:
        known = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in cfg.items() if k in known})


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


def release_cached_memory(device: torch.device) -> None:
    """Give the memory PyTorch's CUDA allocator keeps cached back to the device (after a job: its peak, GBs for
    many targets at once, stays reserved by this process otherwise, out of reach of the other workers TorchServe
    runs on the same GPU, one process each). Nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
