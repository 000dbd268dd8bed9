"""Services the tests share: the tiny hand-set model and the trained shapes and motion models."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnviz import ModelSpec, Preprocess, load_weights, model_from_file, read_state_dict
from tests.tiny import Tiny
from vizserve import Limits, VizService

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "examples" / "shapes"
MOTION = ROOT / "examples" / "motion"


def tiny_spec() -> ModelSpec:
    """Tiny's spec: 2 x 3 inputs that are used as given (mean 0, std 1), three classes."""
    pre = Preprocess(resize=2, crop=(2, 3), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return ModelSpec("tiny", (3, 2, 3), pre, ("zero", "one", "two"), weights="hand-set")


def tiny_service(
    limits: Limits = Limits(), model: torch.nn.Module | None = None, device: torch.device = torch.device("cpu")
) -> VizService:
    from torchvision import transforms

    # The tiny model takes 2 x 3 inputs: squash any image to that size.
    transform = transforms.Compose(
        [transforms.Resize((2, 3)), transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float32)]
    )
    model = (model or Tiny()).to(device)
    return VizService(model, tiny_spec(), device=device, name="tiny_viz", transform=transform, limits=limits)


def shapes_spec(**changes) -> ModelSpec:
    doc = json.loads((SHAPES / "model.json").read_text())
    return ModelSpec.from_dict(doc, arch="shapes", weights="file:weights.pt", **changes)


def shapes_model() -> torch.nn.Module:
    model = model_from_file(SHAPES / "model.py")
    return load_weights(model, read_state_dict(SHAPES / "weights.pt")).eval()


def shapes_service(limits: Limits = Limits(), device: torch.device = torch.device("cpu")) -> VizService:
    return VizService(shapes_model().to(device), shapes_spec(), device=device, name="shapes_viz", limits=limits)


def motion_service(limits: Limits = Limits(), device: torch.device = torch.device("cpu")) -> VizService:
    """The trained video example, as ``./archive.sh motion`` serves it."""
    doc = json.loads((MOTION / "model.json").read_text())
    spec = ModelSpec.from_dict(doc, arch="motion", weights="file:weights.pt")
    model = load_weights(model_from_file(MOTION / "model.py"), read_state_dict(MOTION / "weights.pt")).eval()
    return VizService(model.to(device), spec, device=device, name="motion_viz", limits=limits)
