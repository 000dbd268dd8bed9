"""The architectures this package serves (every CNN classifier torchvision has), built through torchvision, and
their weights.

Weights come from torchvision's weights API (``IMAGENET1K_V1`` by default), from a state-dict file, or from a seeded
random initialisation (smoke tests only). Nothing here downloads unless :func:`imagenet_state_dict` is called.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from .errors import InvalidOption
from .spec import ModelSpec, Preprocess

__all__ = [
    "ARCHITECTURES",
    "VIDEO_ARCHITECTURES",
    "TRANSFORMERS",
    "build_model",
    "check_arch",
    "imagenet_weights",
    "imagenet_state_dict",
    "random_state_dict",
    "read_state_dict",
    "load_weights",
    "model_from_file",
    "torchvision_spec",
    "WeightsUnavailable",
]

_LISTED = tuple(tvm.list_models(module=tvm)) + tuple(tvm.list_models(module=tvm.video))
#: torchvision's vision transformers (images and video): their layers output token sequences, not feature maps
#: (refused, see :func:`check_arch`).
TRANSFORMERS: tuple[str, ...] = tuple(n for n in _LISTED if n.startswith(("vit_", "swin", "maxvit", "mvit")))
#: Every convolutional classification architecture of torchvision, by its name: images, then video.
ARCHITECTURES: tuple[str, ...] = tuple(n for n in _LISTED if n not in TRANSFORMERS)
#: The video CNNs among them (inputs ``[N, 3, T, H, W]``, Kinetics-400 weights).
VIDEO_ARCHITECTURES: tuple[str, ...] = tuple(n for n in tvm.list_models(module=tvm.video) if n in ARCHITECTURES)

# Builder arguments torchvision itself passes when it loads pretrained weights (its builders set them only when
# ``weights`` is given; we build without weights and load them ourselves). The auxiliary classifiers exist only for
# training; their keys in a state dict are skipped by load_weights.
_BUILDER_ARGS: dict[str, dict] = {
    "inception_v3": {"transform_input": True, "aux_logits": False, "init_weights": False},
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": False},
}
# Where the last-stage rule of LayerTable.cam_layer is not what a person would pick: SqueezeNet's classifier is a
# 1x1 convolution to 1000 class maps, whose Grad-CAM is the class's own map, not a weighting of features.
_CAM_LAYERS = {"squeezenet1_0": "features", "squeezenet1_1": "features"}


class WeightsUnavailable(RuntimeError):
    """torchvision's pretrained weights could not be had (offline, or not in the cache)."""


def check_arch(arch: str) -> str:
    """``arch`` if torchvision has it as a CNN classifier; else :class:`InvalidOption` that says why and what is."""
    if arch in TRANSFORMERS:
        raise InvalidOption(
            f"{arch} is a vision transformer: its blocks output token sequences [tokens, C], not feature maps "
            f"[C, H, W], so feature maps, filters and Grad-CAM layers do not apply to it. Served: the CNNs "
            f"{', '.join(ARCHITECTURES)}"
        )
    if arch not in ARCHITECTURES:
        close = difflib.get_close_matches(arch, ARCHITECTURES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidOption(f"unknown architecture {arch!r}{hint}; valid: {', '.join(ARCHITECTURES)}")
    return arch


def build_model(arch: str, builder: Mapping[str, Any] | None = None) -> nn.Module:
    """An untrained ``arch`` from torchvision, in eval mode, on the CPU, built with ``builder`` (keyword arguments
    of torchvision's builder; default: as its pretrained weights expect, without auxiliary classifiers)."""
    kwargs = _BUILDER_ARGS.get(arch, {}) if builder is None else builder
    return tvm.get_model(check_arch(arch), weights=None, **kwargs).eval()


def imagenet_weights(arch: str, name: str | None = None) -> WeightsEnum:
    """torchvision's weights entry for ``arch``: url, categories, eval transform and metadata.

    ``name`` picks one (``IMAGENET1K_V2``, ``DEFAULT``); by default ``IMAGENET1K_V1`` where it exists (resize 256 /
    crop 224 for most, as the papers and the course notes used), else torchvision's ``DEFAULT``.
    """
    entries = tvm.get_model_weights(check_arch(arch))
    if name is None:
        name = "IMAGENET1K_V1" if "IMAGENET1K_V1" in entries.__members__ else "DEFAULT"
    try:
        return entries[name]
    except KeyError:
        raise InvalidOption(f"{arch} has no weights {name!r}; it has: {', '.join(entries.__members__)}") from None


def _clip_of(entry: WeightsEnum) -> tuple[int, float]:
    """The clip length and frame rate a video model's weights were evaluated with: torchvision states them only in
    the prose of ``meta["_docs"]`` (``frame_rate=15``, ``clip_len=16``); 16 frames at 15 fps where it does not."""
    docs = str(entry.meta.get("_docs", ""))
    frames = re.search(r"clip_len=(\d+)", docs)
    fps = re.search(r"frame_rate=(\d+(?:\.\d+)?)", docs)
    return (int(frames.group(1)) if frames else 16), (float(fps.group(1)) if fps else 15.0)


def torchvision_spec(arch: str, weights_name: str | None = None, **changes) -> ModelSpec:
    """The spec of a torchvision architecture from its weights' own metadata: the eval transform (resize, crop,
    interpolation, mean, std: what ``weights.transforms()`` does), the input size, the smallest input, the labels and
    the builder arguments. Default layers are left to the layer table (:meth:`ModelSpec.with_defaults`), except
    where :data:`_CAM_LAYERS` names one. ``changes`` override fields (``weights``)."""
    entry = imagenet_weights(arch, weights_name)
    t = entry.transforms()
    crop = (int(t.crop_size[0]),) * 2 if len(t.crop_size) == 1 else tuple(int(c) for c in t.crop_size)
    video = arch in VIDEO_ARCHITECTURES
    frames, fps = _clip_of(entry) if video else (None, None)
    pre = Preprocess(
        resize=int(t.resize_size[0]) if len(t.resize_size) == 1 else tuple(int(r) for r in t.resize_size),
        crop=crop,
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation=t.interpolation.value,
        frames=frames,
        fps=fps,
    )
    values = {
        "arch": arch,
        "modality": "video" if video else "image",
        "input_shape": (3, frames, *crop) if video else (3, *crop),
        "preprocess": pre,
        "labels": tuple(entry.meta["categories"]),
        "weights": entry.name,
        "weights_entry": entry.name,
        "builder": dict(_BUILDER_ARGS.get(arch, {})),
        "min_side": int(min(entry.meta.get("min_size", (1, 1)))),
        "cam_layer": _CAM_LAYERS.get(arch),
    }
    values.update(changes)
    return ModelSpec(**values)


def imagenet_state_dict(arch: str, *, name: str | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    """The pretrained state dict (entry ``name``, see :func:`imagenet_weights`), from torchvision's cache under
    ``$TORCH_HOME`` or downloaded when online.

    Raises :class:`WeightsUnavailable` with the ways out when neither works.
    """
    weights = imagenet_weights(arch, name)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # urllib, socket and hash errors all mean the same thing to the caller
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise WeightsUnavailable(
            f"cannot get torchvision's {arch} {weights.name} weights ({type(exc).__name__}: {exc}).\n"
            f"  Ways out:\n"
            f"  - put the file {os.path.basename(weights.url)} (from {weights.url}) at {cache}\n"
            f"    or pass it with --weights FILE (any state dict for torchvision's {arch});\n"
            f"  - or use --random-weights for a smoke test (predictions and pictures are then meaningless)."
        ) from exc


def random_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's default initialisation of ``arch`` under ``torch.manual_seed(seed)``: repeatable."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch).state_dict()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``torch.save`` of ``model.state_dict()``, or a checkpoint holding one under
    ``state_dict`` or ``model``). Loaded with ``weights_only=True``: no code in the file runs."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        # torch's own text for this case advises weights_only=False, which would run code from the file: not shown.
        raise ValueError(
            f"{path}: not a state dict saved with torch.save, or one holding more than tensors (it is read with "
            f"weights_only=True, so no code in it runs; {type(exc).__name__})"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict") -> nn.Module:
    """Load ``state`` strictly, with an error that names the missing and unexpected keys.

    Keys of submodules the model has set to ``None`` are skipped: torchvision's Inception-v3 and GoogLeNet weights
    carry auxiliary classifiers that exist only for training (torchvision drops them the same way).
    """
    absent = {n for n, v in vars(model).items() if v is None and not n.startswith("_")}
    dropped = tuple(f"{n}." for n in absent | {n for n, m in model._modules.items() if m is None})
    state = {k: v for k, v in state.items() if not (dropped and k.startswith(dropped))}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
    return model


def model_from_file(path: str | os.PathLike) -> nn.Module:
    """A user's own model: the one ``nn.Module`` subclass defined in the Python file ``path``, built with no
    arguments, in eval mode. The file is trusted code from the model archive (never request text)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"user_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [
        c for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, nn.Module) and c.__module__ == module.__name__
    ]  # fmt: skip
    if len(classes) != 1:
        names = [c.__name__ for c in classes]
        raise ValueError(f"{path}: expected exactly one nn.Module class, found {len(classes)} {names}")
    return classes[0]().eval()
