"""Largest responses per architecture, to set max_response_size in config.properties from measurement.

Measures, in process with the service TorchServe runs: the default layers (first and last convolution) with
featuremaps+filters, channels=all and raw=true, and the same for the single largest feature map of each model.
Run: .venv/bin/python bench/response_sizes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import build_model, torchvision_spec  # noqa: E402
from vizserve import Limits, VizService  # noqa: E402

IMAGE = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()


def main() -> None:
    print("| arch | request | response MB |\n|---|---|---|")
    for arch in ("alexnet", "vgg16", "resnet18"):
        svc = VizService(
            build_model(arch), torchvision_spec(arch, weights="random"), device=torch.device("cpu"),
            name=f"{arch}_viz", limits=Limits(max_response_bytes=2**40),
        )  # fmt: skip
        biggest = max(svc.table.spatial_names, key=lambda n: torch.Size(svc.table[n].output_shape).numel())
        asks = {
            "default layers, featuremaps+filters, channels=all, raw": {},
            f"{biggest}, featuremaps, channels=all, raw": {"layers": biggest},
        }
        for label, extra in asks.items():
            fields = {"data": IMAGE, "mode": "featuremaps,filters" if not extra else "featuremaps"}
            [reply] = svc.handle([{**fields, "channels": "all", "raw": "true", **extra}])
            assert reply.status == 200, reply.body[:300]
            print(f"| {arch} | {label} | {len(reply.body) / 1e6:.1f} |")


if __name__ == "__main__":
    main()
