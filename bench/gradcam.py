"""Grad-CAM speed: our core against pytorch-grad-cam and Captum in one process, and gradcam against classify
through TorchServe.

In process: same model (AlexNet and ResNet18, seeded random weights), same input batch, layer and targets; each
library makes the maps at input resolution (ours: ReLU + bilinear; pytorch-grad-cam: its default; Captum:
LayerGradCam with relu_attributions=True, then bilinear interpolation). Calls are interleaved in shuffled order;
medians and ratios (library / ours) are reported, with how far each library's maps are from ours after min-max
scaling. Through TorchServe: sequential classify and gradcam requests to alexnet_viz, interleaved.

Needs requirements-bench.txt (pytorch-grad-cam). Run: .venv/bin/python bench/gradcam.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import requests
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from captum.attr import LayerGradCam  # noqa: E402
from pytorch_grad_cam import GradCAM as PGCGradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from cnnviz import GradCAM, LayerTable, build_model, random_state_dict  # noqa: E402
from scripts.local_torchserve import seeded_alexnet_server  # noqa: E402
from scripts.timing import interleaved, ok_200  # noqa: E402

IMAGE = ROOT / "docs" / "grace_hopper.jpg"


def minmax(t: torch.Tensor) -> torch.Tensor:
    flat = t.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(t)


def measure(arch: str, batch: int, rounds: int) -> list[dict]:
    model = build_model(arch)
    model.load_state_dict(random_state_dict(arch, seed=0))
    model.eval()
    layer = LayerTable(model, (3, 224, 224)).cam_layer
    module = dict(model.named_modules())[layer]
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(batch) * 7
    ours = GradCAM(model, layer)
    pgc = PGCGradCAM(model=model, target_layers=[module])
    captum = LayerGradCam(model, module)

    def run_ours():
        return ours(x, targets).cams

    def run_pgc():
        return torch.from_numpy(pgc(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))

    def run_captum():
        attr = captum.attribute(x, target=targets, relu_attributions=True)
        return F.interpolate(attr, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    runs = {"ours": run_ours, "pytorch-grad-cam": run_pgc, "captum": run_captum}
    maps = {name: fn().detach() for name, fn in runs.items()}  # warm-up, and the maps to compare
    times = interleaved(runs, rounds)
    pgc.activations_and_grads.release()
    base = statistics.median(times["ours"])
    reference = minmax(maps["ours"])
    return [
        {
            "model": arch, "batch": batch, "layer": layer, "library": name,
            "median_ms": round(statistics.median(times[name]), 1),
            "ratio_to_ours": round(statistics.median(times[name]) / base, 3),
            "max_abs_diff_after_minmax": round(float((minmax(maps[name]) - reference).abs().max()), 4),
        }
        for name in runs
    ]  # fmt: skip


def in_process(rounds: int) -> list[dict]:
    configs = [("alexnet", 1), ("alexnet", 8), ("resnet18", 1), ("resnet18", 8)]
    return [row for arch, batch in configs for row in measure(arch, batch, rounds)]


def through_server(rounds: int) -> dict:
    image = IMAGE.read_bytes()
    with seeded_alexnet_server("bench_gradcam_") as server:
        session = requests.Session()
        variants = {
            "classify": {"mode": "classify"},
            "gradcam": {"mode": "gradcam"},
            "gradcam, format=png": {"mode": "gradcam", "format": "png"},
        }
        calls = {
            name: (
                lambda fields=fields: server.post(
                    "alexnet_viz", files={"data": ("x.jpg", image)}, data=fields, session=session
                )
            )  # fmt: skip
            for name, fields in variants.items()
        }
        times = interleaved(calls, rounds, warmup=10, check=ok_200)
    base = statistics.median(times["classify"])
    return {
        name: {"median_ms": round(statistics.median(v), 1), "ratio_to_classify": round(statistics.median(v) / base, 2)}
        for name, v in times.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--server-rounds", type=int, default=60)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gradcam.json"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    rows = in_process(args.rounds)
    print("| model | batch | layer | library | median ms | ratio to ours | max diff after min-max |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["model"], r["batch"], r["layer"], r["library"], r["median_ms"], f"{r['ratio_to_ours']:.2f}"]
        print("| " + " | ".join(map(str, cells)) + f" | {r['max_abs_diff_after_minmax']} |")
    server = through_server(args.server_rounds)
    print("\n| request (alexnet_viz, through TorchServe) | median ms | ratio to classify |\n|---|---|---|")
    for name, r in server.items():
        print(f"| {name} | {r['median_ms']} | {r['ratio_to_classify']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"in_process": rows, "through_torchserve": server}, indent=2))


if __name__ == "__main__":
    main()
