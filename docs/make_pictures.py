"""Regenerate the README's pictures: the service TorchServe runs, in process, on docs/grace_hopper.jpg.

Weights are seeded random (no pretrained weights on the machines this project is built on), so the pictures show
what the code draws, not what a trained AlexNet sees. Run: .venv/bin/python docs/make_pictures.py
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "handlers"))

from cnnviz import build_model, imagenet_weights, random_state_dict  # noqa: E402
from vizserve import VizService  # noqa: E402


def main() -> None:
    weights = imagenet_weights("alexnet")
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    svc = VizService(model, labels=weights.meta["categories"], transform=weights.transforms(),
                     device=torch.device("cpu"), name="alexnet_viz", arch="alexnet", weights="random")  # fmt: skip
    image = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    [reply] = svc.handle([{"data": image, "mode": "featuremaps,filters", "channels": "32"}])
    out = json.loads(reply.body)
    for kind in ("featuremaps", "filters"):
        for entry in out[kind]:
            path = ROOT / "docs" / f"alexnet_{kind}_{entry['layer'].replace('.', '_')}.png"
            path.write_bytes(base64.b64decode(entry["image"]))
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
