"""Build a :class:`VizService` from an unpacked model archive (or any folder laid out the same way)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision import transforms

from cnnviz import build_model, imagenet_weights, load_weights, model_from_file, read_state_dict

from .service import Limits, VizService

__all__ = ["LABELS_FILE", "load_service", "read_labels"]

LABELS_FILE = "index_to_name.json"


def read_labels(path: Path) -> list[str]:
    """Labels from TorchServe's ``index_to_name.json`` (``{"0": "tench", ...}`` or ``{"0": [wnid, name]}``)."""
    mapping = json.loads(Path(path).read_text())
    labels = [mapping[str(i)] for i in range(len(mapping))]
    return [v[-1] if isinstance(v, list) else str(v) for v in labels]


def load_service(model_dir: str | Path, cfg: Mapping[str, Any], *, device: torch.device, name: str) -> VizService:
    """The service for the archive in ``model_dir``.

    ``cfg`` is the ``handler:`` section of model-config.yaml: ``arch``, ``weights`` (the tag to report),
    ``weights_file`` (state dict inside the archive) and the optional caps of :class:`Limits`; for a user's own
    model also ``model_file`` (the Python file with its class) and ``preprocess`` (see :func:`preprocessing`).
    """
    model_dir = Path(model_dir)
    arch = cfg["arch"]
    if "model_file" in cfg:  # a user's own model: its class, its preprocessing
        model = model_from_file(model_dir / cfg["model_file"])
        transform, input_shape = preprocessing(cfg["preprocess"])
        mean, std = cfg["preprocess"]["mean"], cfg["preprocess"]["std"]
    else:
        model = build_model(arch)
        transform, input_shape = imagenet_weights(arch).transforms(), (3, 224, 224)
        mean, std = transform.mean, transform.std
    weights_file = model_dir / cfg.get("weights_file", "weights.pt")
    load_weights(model, read_state_dict(weights_file), source=str(weights_file.name))
    model.to(device).eval()
    return VizService(
        model,
        labels=read_labels(model_dir / LABELS_FILE),
        transform=transform,
        device=device,
        name=name,
        arch=arch,
        weights=str(cfg.get("weights", "unknown")),
        input_shape=input_shape,
        mean=mean,
        std=std,
        limits=Limits.from_config(cfg),
    )


def preprocessing(spec: Mapping[str, Any]) -> tuple[Callable, tuple[int, int, int]]:
    """The eval transform of a user's model from ``{resize, crop, mean, std}``, the same steps torchvision's
    weights use: resize the short side (bilinear, antialiased), centre crop, scale to [0, 1], normalize."""
    crop = int(spec["crop"])
    transform = transforms.Compose(
        [
            transforms.Resize(int(spec["resize"]), antialias=True),
            transforms.CenterCrop(crop),
            transforms.PILToTensor(),
            transforms.ConvertImageDtype(torch.float32),
            transforms.Normalize(spec["mean"], spec["std"]),
        ]
    )
    return transform, (3, crop, crop)
