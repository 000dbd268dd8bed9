"""The architectures this package serves, built through torchvision, and their weights.

Weights come from torchvision's weights API (``IMAGENET1K_V1``), from a state-dict file, or from a seeded random
initialisation (smoke tests only). Nothing here downloads unless :func:`imagenet_state_dict` is called.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from .errors import InvalidOption

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "imagenet_weights",
    "imagenet_state_dict",
    "random_state_dict",
    "read_state_dict",
    "load_weights",
    "model_from_file",
    "WeightsUnavailable",
]

#: Architectures served, as torchvision names them.
ARCHITECTURES: tuple[str, ...] = ("alexnet", "vgg16", "vgg19", "resnet18", "resnet50")


class WeightsUnavailable(RuntimeError):
    """torchvision's pretrained weights could not be had (offline, or not in the cache)."""


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise InvalidOption(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return arch


def build_model(arch: str) -> nn.Module:
    """An untrained ``arch`` from torchvision, in eval mode, on the CPU (1000 ImageNet classes)."""
    return tvm.get_model(_check_arch(arch), weights=None).eval()


def imagenet_weights(arch: str) -> WeightsEnum:
    """torchvision's ``IMAGENET1K_V1`` weights entry for ``arch``: url, categories and eval transform.

    V1 for every architecture, so that preprocessing is resize 256 / crop 224 everywhere (ResNet-50's V2 uses 232).
    """
    return tvm.get_model_weights(_check_arch(arch)).IMAGENET1K_V1


def imagenet_state_dict(arch: str, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The pretrained state dict, from torchvision's cache under ``$TORCH_HOME`` or downloaded when online.

    Raises :class:`WeightsUnavailable` with the ways out when neither works.
    """
    weights = imagenet_weights(arch)
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
    """Load ``state`` strictly, with an error that names the missing and unexpected keys."""
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
