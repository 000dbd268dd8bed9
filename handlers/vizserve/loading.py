"""Build a :class:`VizService` from an unpacked model archive (or any folder laid out the same way)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cnnviz import build_model, imagenet_weights, load_weights, read_state_dict

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
    ``weights_file`` (state dict inside the archive) and the optional caps of :class:`Limits`.
    """
    model_dir = Path(model_dir)
    arch = cfg["arch"]
    model = build_model(arch)
    weights_file = model_dir / cfg.get("weights_file", "weights.pt")
    load_weights(model, read_state_dict(weights_file), source=str(weights_file.name))
    model.to(device).eval()
    return VizService(
        model,
        labels=read_labels(model_dir / LABELS_FILE),
        transform=imagenet_weights(arch).transforms(),
        device=device,
        name=name,
        arch=arch,
        weights=str(cfg.get("weights", "unknown")),
        limits=Limits.from_config(cfg),
    )
