"""Every CAM method against pytorch-grad-cam's, and the perturbation and path methods against Captum as a user
calls it, in one process on one core.

Same model (AlexNet and ResNet18, seeded random weights), input (``docs/grace_hopper.jpg`` through the model's
transform, one image), layer (the model's ``cam_layer``) and target (class 7). pytorch-grad-cam: each class with its
defaults (Score-CAM: 16 masked inputs a pass, Ablation-CAM: 32), progress bars off; Captum: its defaults
(``perturbations_per_eval=1`` for occlusion and feature ablation, every step in one pass for integrated gradients),
the window, stride and baseline of ours. Ours: the core's classes and :func:`cnnviz.saliency`, as the server runs
them (``max_cam_passes`` and the time budget off). Calls are interleaved in shuffled order; medians and the ratio
peer / ours are reported, with the Pearson correlation of the two maps (1: the same map up to scale; where ours
departs from the peer's algorithm, see docs/methods.md's list of departures, it is lower).

Needs requirements-bench.txt (pytorch-grad-cam). Run: .venv/bin/python bench/methods.py [--rounds 5]
(about 10 minutes: Score-CAM of ResNet18's layer4 is 512 passes of the network a call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM draws a progress bar per call

import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

import pytorch_grad_cam as pgc  # noqa: E402
from captum.attr import FeatureAblation, IntegratedGradients, NoiseTunnel, Occlusion, Saliency  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from cnnviz import (  # noqa: E402
    CAM_METHODS,
    LayerTable,
    baseline,
    build_model,
    imagenet_weights,
    random_state_dict,
    saliency,
)
from cnnviz.attributions import _grid, patches  # noqa: E402
from scripts.timing import interleaved  # noqa: E402

IMAGE = ROOT / "docs" / "grace_hopper.jpg"
TARGET = 7
#: Our method name -> pytorch-grad-cam's class.
PEERS = {
    "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
    "gradcam_elementwise": pgc.GradCAMElementWise, "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM, "eigengradcam": pgc.EigenGradCAM, "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM, "fullgrad": pgc.FullGrad,
}  # fmt: skip
SLOW = ("scorecam", "ablationcam", "occlusion", "feature_ablation")


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))


def model_and_input(arch: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    model = build_model(arch)
    model.load_state_dict(random_state_dict(arch, seed=0))
    model.eval()
    x = imagenet_weights(arch).transforms()(Image.open(IMAGE).convert("RGB"))[None]
    return model, x, LayerTable(model, tuple(x.shape[1:])).cam_layer


def cam_pairs(model, x, layer: str) -> dict[str, Callable[[], dict]]:
    """Per method, a function that sets up ours and pytorch-grad-cam's (each a function returning the map
    ``[H, W]``) and a ``release``. Set up one method at a time: pytorch-grad-cam's hooks record every forward pass
    of the model until released (its FullGrad's, every layer's output: gigabytes over a Score-CAM run)."""
    module = dict(model.named_modules())[layer]
    targets = torch.tensor([TARGET])

    def setup(name: str) -> dict:
        if name == "fullgrad":
            ours = CAM_METHODS[name](model, None)
        elif name in ("scorecam", "ablationcam"):
            ours = CAM_METHODS[name](model, layer, max_passes=10**6)  # no cap: the peer has none
        else:
            ours = CAM_METHODS[name](model, layer)
        peer = PEERS[name](model=model, target_layers=[] if name == "fullgrad" else [module])
        return {
            "ours": lambda: ours(x, targets).cams[0],
            "peer": lambda: torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(TARGET)]))[0],
            "peer_name": "pytorch-grad-cam",
            "release": peer.activations_and_grads.release,
        }

    return {name: (lambda name=name: setup(name)) for name in PEERS}


def captum_pairs(model, x) -> dict[str, Callable[[], dict]]:
    """Per method: ours (:func:`cnnviz.saliency`) and Captum with its defaults, each returning ``[C, H, W]``."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    black = baseline("black", mean, std)
    base = black.expand_as(x).contiguous()
    targets = torch.tensor([TARGET])
    sizes, steps = patches(x.shape[2:], 0.125, 0.5)
    sigma = 0.15 * float(x.max() - x.min())

    def ours(method):
        return lambda: saliency(model, x, targets, method, baseline=black, max_perturbations=10**6)[0]

    def grad(fn):
        def run():
            with torch.enable_grad():
                return fn(x.clone().requires_grad_(True)).detach()[0]

        return run

    peers = {
        "occlusion": lambda: Occlusion(model).attribute(
            x, sliding_window_shapes=(3, *sizes), strides=(3, *steps), baselines=base, target=TARGET
        )[0],
        "feature_ablation": lambda: FeatureAblation(model).attribute(
            x, baselines=base, target=TARGET, feature_mask=_grid(x, sizes)
        )[0],
        "integrated_gradients": grad(
            lambda xi: IntegratedGradients(model).attribute(xi, baselines=base, target=TARGET, n_steps=32)
        ),
        "smoothgrad": grad(
            lambda xi: NoiseTunnel(Saliency(model)).attribute(
                xi, nt_type="smoothgrad", nt_samples=16, stdevs=sigma, target=TARGET
            )
        ),
    }
    return {
        m: (lambda m=m, fn=fn: {"ours": ours(m), "peer": fn, "peer_name": "captum", "release": lambda: None})
        for m, fn in peers.items()
    }


def measure(arch: str, rounds: int, slow_rounds: int) -> list[dict]:
    model, x, layer = model_and_input(arch)
    rows = []
    for group in (cam_pairs(model, x, layer), captum_pairs(model, x)):
        for method, setup in group.items():
            pair = setup()
            a, b = pair["ours"]().detach(), pair["peer"]().detach()  # warm-up, and the maps to compare
            times = interleaved({"ours": pair["ours"], "peer": pair["peer"]}, slow_rounds if method in SLOW else rounds)
            pair["release"]()
            ours_ms, peer_ms = statistics.median(times["ours"]), statistics.median(times["peer"])
            rows.append({
                "model": arch, "layer": layer, "method": method, "peer": pair["peer_name"],
                "ours_ms": round(ours_ms, 1), "peer_ms": round(peer_ms, 1),
                "peer_over_ours": round(peer_ms / ours_ms, 2),
                "correlation": round(correlation(a, b), 3),
            })  # fmt: skip
            print(f"| {arch} | {method} | {rows[-1]['peer']} | {fmt(ours_ms)} | {fmt(peer_ms)} | "
                  f"{peer_ms / ours_ms:.2f} | {rows[-1]['correlation']:.3f} |", flush=True)  # fmt: skip
    return rows


def fmt(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="timed calls of each fast method and library")
    p.add_argument("--slow-rounds", type=int, default=3, help="of Score-CAM, Ablation-CAM, occlusion, ablation")
    p.add_argument("--models", default="alexnet,resnet18")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core, as bench/capacity.py)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "methods.json"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| model | method | peer | ours | peer | peer / ours | correlation of the maps |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = [row for arch in args.models.split(",") for row in measure(arch, args.rounds, args.slow_rounds)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
