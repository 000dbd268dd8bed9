"""What the device lanes ask of a service, and how they compare its answers with the CPU's.

Two lanes share this: the fake CUDA lane (``tests/fakecuda.py``, in CI: answers equal to the CPU's, bit for bit,
since the fake computes on the CPU) and the real CUDA lane (``-m gpu``, on a GPU: the same requests, with the maps
compared within a tolerance).
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

import numpy as np
import torch

from cnnviz import CAM_METHODS, SALIENCY_METHODS, build_model, random_state_dict, torchvision_spec

#: Fields that differ between two runs of one request (where it ran, how long it took).
VOLATILE = frozenset({"device", "seconds"})
#: Pictures: equal on the fake device; on a real one only their presence is compared.
PICTURES = frozenset({"image", "heatmap", "animation", "preview", "images"})

# small but every code path: SmoothGrad's noise, IG's steps, perturbations in patches of a quarter of the side
_FAST = {"samples": "4", "ig_steps": "8", "window": "0.25"}


def image_requests(with_target: str | None = None) -> list[dict[str, str]]:
    """Every mode of an image model, every Grad-CAM and saliency method, and the options that move tensors
    (faithfulness curves, smoothing, a blurred baseline, init=image, format=png). ``with_target``: the class every
    attribution explains (a real GPU's top-1 class of a random model may differ from the CPU's)."""
    t = {"target": with_target} if with_target is not None else {}
    out: list[dict[str, str]] = [
        {"mode": "classify", "topk": "3"},
        {"mode": "featuremaps", "raw": "true", "normalize": "layer"},
        {"mode": "filters"},
        {"mode": "layers"},
        {"mode": "describe"},
        {"mode": "deconv", "raw": "true"},
        {"mode": "gradcam", "raw": "true", "aug_smooth": "true", "eigen_smooth": "true", **t},
        {"mode": "gradcam", "faithfulness": "true", "faithfulness_steps": "4", **t},
        {"mode": "saliency", "method": "integrated_gradients", "baseline": "white", "faithfulness": "true",
         "faithfulness_steps": "4", **_FAST, **t},
        {"mode": "gradcam,saliency", "format": "png", **t},
        {"mode": "actmax", "channel": "0-1", "steps": "3", "precision": "float32", "raw": "true"},
        {"mode": "actmax", "channel": "0", "steps": "2", "init": "image", "init_weight": "1", "param": "pixel",
         "precision": "float32"},
        {"mode": "invert", "steps": "3", "precision": "float32"},
    ]  # fmt: skip
    out += [{"mode": "gradcam", "method": m, "raw": "true", **t} for m in CAM_METHODS]
    out += [{"mode": "saliency", "method": m, "raw": "true", **_FAST, **t} for m in SALIENCY_METHODS]
    return out


def video_requests(with_target: str | None = None) -> list[dict[str, str]]:
    """The modes a video model takes, on a clip (``.npy`` ``[3, T, H, W]``)."""
    t = {"target": with_target} if with_target is not None else {}
    return [
        {"mode": "classify,featuremaps", "raw": "true"},
        {"mode": "filters"},
        {"mode": "gradcam", "raw": "true", **t},
        {"mode": "gradcam", "method": "gradcam++", "format": "gif", **t},
        {"mode": "saliency", "method": "vanilla", "raw": "true", **t},
        {"mode": "saliency", "method": "integrated_gradients", "raw": "true", **_FAST, **t},
        {"mode": "saliency", "method": "occlusion", "window": "0.5", "raw": "true", **t},
        {"mode": "actmax", "channel": "0", "steps": "2", "size": "16", "precision": "float32", "raw": "true"},
    ]


#: The models of the real CUDA lane and of scripts/gpu_check.py: two image CNNs of torchvision and a video one with
#: seeded random weights (nothing to download), and the project's trained shapes model.
MODELS = ("alexnet", "resnet18", "shapes", "r3d_18")


def service_for(arch: str, device: torch.device, seed: int = 0, **kw):
    """The service of ``arch`` on ``device``: torchvision's architecture with ``random_state_dict(arch, seed)``
    (the same weights on every device), or the trained shapes model."""
    from tests.services import shapes_service
    from vizserve import VizService

    if arch == "shapes":
        return shapes_service(device=device, **kw)
    model = build_model(arch)
    model.load_state_dict(random_state_dict(arch, seed=seed))
    spec = torchvision_spec(arch, weights="random")
    return VizService(model.eval().to(device), spec, device=device, name=f"{arch}_viz", **kw)


def archive_folder(arch: str, folder) -> None:
    """``arch`` laid out in ``folder`` as its model archive is (``spec.json``, ``weights.pt``, and the shapes model's
    ``model.py``), for :func:`vizserve.load_service`: seeded random weights, or the shapes model's trained ones."""
    import json
    import shutil
    from pathlib import Path

    from tests.services import SHAPES, shapes_spec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if arch == "shapes":
        spec = shapes_spec(model_file="model.py")
        shutil.copy(SHAPES / "model.py", folder / "model.py")
        shutil.copy(SHAPES / "weights.pt", folder / "weights.pt")
    else:
        spec = torchvision_spec(arch, weights="random")
        torch.save(random_state_dict(arch, seed=0), folder / "weights.pt")
    (folder / "spec.json").write_text(json.dumps(spec.to_dict()))


def input_for(service) -> bytes:
    """What to send ``service``: a photo-like JPEG for an image model (a square for shapes), a ``.npy`` clip of the
    model's input shape for a video model."""
    from tests.images import jpeg, npy, shape_png

    spec = service.spec
    if spec.modality == "video":
        rng = np.random.default_rng(0)
        return npy((rng.standard_normal(spec.input_shape) * 0.5).astype(np.float32))
    if spec.arch == "shapes":
        return shape_png(label=1, seed=11, pool=40)[0]
    return jpeg(320, 240)


def requests_for(service, with_target: str | None = None) -> list[dict[str, str]]:
    video = service.spec.modality == "video"
    return video_requests(with_target) if video else image_requests(with_target)


def label(fields: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in fields.items() if k != "data")


def body(reply) -> Any:
    """A reply's body without what varies between runs: JSON parsed, volatile fields dropped; else the bytes."""
    if reply.content_type != "application/json":
        return reply.body

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(json.loads(reply.body))


def raw(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def difference(a: Any, b: Any, path: str = "") -> tuple[float, list[str]]:
    """How far the answer ``b`` is from ``a``: the largest difference of a number or a ``raw`` array relative to
    the largest magnitude of that value or array in ``a`` (0 for equal), and the paths where the structure or a
    text differs (pictures: only that both have one)."""
    if isinstance(a, dict) and isinstance(b, dict):
        worst, bad = 0.0, [f"{path}/{k}: missing on one side" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b)):
            if k in PICTURES:
                continue
            if k == "raw" and isinstance(a[k], str) and isinstance(b[k], str):
                x, y = raw(a[k]), raw(b[k])
                if x.shape != y.shape:
                    bad.append(f"{path}/raw: shape {x.shape} != {y.shape}")
                    continue
                scale = float(np.abs(x).max()) if x.size else 0.0
                gap = float(np.abs(x.astype(np.float64) - y).max()) if x.size else 0.0
                worst = max(worst, gap / scale if scale > 0 else gap)
                continue
            w, more = difference(a[k], b[k], f"{path}/{k}")
            worst, bad = max(worst, w), bad + more
        return worst, bad
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return 0.0, [f"{path}: {len(a)} items != {len(b)}"]
        worst, bad = 0.0, []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            w, more = difference(x, y, f"{path}/{i}")
            worst, bad = max(worst, w), bad + more
        return worst, bad
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return 0.0, ([] if a == b else [f"{path}: {str(a)[:60]!r} != {str(b)[:60]!r}"])
    if math.isnan(a) and math.isnan(b):
        return 0.0, []
    return abs(a - b) / max(abs(a), 1e-6), []
