"""Regenerate the pictures of the README and docs/ with the service TorchServe runs, in process.

AlexNet (seeded random weights: no pretrained weights on the machines this project is built on) on
docs/grace_hopper.jpg; the trained shapes model on generated shapes; the trained motion model on generated clips.
Run: .venv/bin/python docs/make_pictures.py [alexnet] [shapes] [motion]
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import ModelSpec, build_model, random_state_dict, torchvision_spec  # noqa: E402
from examples.shapes.model import ShapesNet  # noqa: E402
from examples.shapes.shapes_data import make_shapes, normalize  # noqa: E402
from tests.images import raw_array  # noqa: E402
from vizserve import VizService, render  # noqa: E402

SHAPES = {  # picture: (class to draw, fields)
    "gradcam": (3, {"mode": "gradcam"}),
    "gradcam++": (2, {"mode": "gradcam", "method": "gradcam++"}),
    "guided_backprop": (4, {"mode": "saliency", "method": "guided_backprop"}),
    "integrated_gradients": (3, {"mode": "saliency", "method": "integrated_gradients"}),
    "deconv": (5, {"mode": "deconv"}),
}


def shapes_pictures() -> None:
    model = ShapesNet()
    model.load_state_dict(torch.load(ROOT / "examples" / "shapes" / "weights.pt", weights_only=True))
    doc = json.loads((ROOT / "examples" / "shapes" / "model.json").read_text())
    spec = ModelSpec.from_dict(doc, arch="shapes", weights="file:weights.pt")
    svc = VizService(model.eval(), spec, device=torch.device("cpu"), name="shapes_viz")
    images, labels, _ = make_shapes(100, seed=2026)
    for name, (label, fields) in SHAPES.items():
        k = int((labels == label).nonzero()[0])
        buf = io.BytesIO()
        Image.fromarray((images[k].permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, "PNG")
        [reply] = svc.handle([{"data": buf.getvalue(), "format": "png", **fields}])
        path = ROOT / "docs" / f"shapes_{name}.png"
        path.write_bytes(reply.body)
        print(path.relative_to(ROOT))
    [reply] = svc.handle([{"mode": "actmax", "channel": "0-5", "raw": "true"}])
    entries = json.loads(reply.body)["actmax"]
    images = torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries])
    with torch.no_grad():
        probs = model(normalize(images)).softmax(-1).diagonal()
    print("actmax class probabilities:", [round(float(p), 4) for p in probs])
    grid = make_grid(torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest"), nrow=6, padding=2)
    path = ROOT / "docs" / "shapes_actmax.png"
    path.write_bytes(render._png(render._to_uint8(grid)))
    print(path.relative_to(ROOT))
    # objectives that compose: sums and differences of classes (logits: a sum of margins is 0 at best)
    for name, fields in (("sum", {"channel": "circle+vertical stripes,cross-horizontal stripes",
                                  "class_score": "logit"}),):  # fmt: skip
        [reply] = svc.handle([{"mode": "actmax", "raw": "true", **fields}])
        entries = json.loads(reply.body)["actmax"]
        images = torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries])
        grid = make_grid(torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest"), nrow=4, padding=2)
        path = ROOT / "docs" / f"shapes_actmax_{name}.png"
        path.write_bytes(render._png(render._to_uint8(grid)))
        print(path.relative_to(ROOT), [e["objective"] for e in entries][:2], [round(e["end"], 2) for e in entries])


def motion_pictures(steps: int = 128) -> None:
    """Grad-CAM over time of a clip moving right (animated WebP, and the static picture: its frames in rows, each
    above its overlay), and the preferred video of every class (as the tests make them), each animated and all as
    one static grid (every second frame)."""
    from examples.motion.motion_data import CLASSES, make_clips, write_video
    from tests.services import motion_service
    from vizserve import Limits

    svc = motion_service(Limits(max_busy_seconds=1200))
    clips, labels, _ = make_clips(24, seed=2026)
    buf = io.BytesIO()
    write_video(clips[labels.tolist().index(CLASSES.index("right"))], buf)
    [reply] = svc.handle([{"data": buf.getvalue(), "mode": "gradcam", "format": "webp"}])
    path = ROOT / "docs" / "motion_gradcam_right.webp"
    path.write_bytes(reply.body)
    print(path.relative_to(ROOT))
    [reply] = svc.handle([{"data": buf.getvalue(), "mode": "gradcam", "format": "png"}])  # the static picture
    path = ROOT / "docs" / "motion_gradcam_right.png"
    path.write_bytes(reply.body)
    print(path.relative_to(ROOT))
    [reply] = svc.handle([{"mode": "actmax", "channel": "0-5", "steps": str(steps), "raw": "true"}])
    entries = json.loads(reply.body)["actmax"]
    for e in entries:
        path = ROOT / "docs" / f"motion_prefers_{e['label']}.webp"
        path.write_bytes(base64.b64decode(e["animation"]))
        print(path.relative_to(ROOT), "end", round(e["end"], 2))
    videos = torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries])
    frames = videos[:, :, ::2].transpose(1, 2).flatten(0, 1)  # every second frame, a row per class
    grid = make_grid(torch.nn.functional.interpolate(frames, scale_factor=2, mode="nearest"), nrow=8, padding=2)
    path = ROOT / "docs" / "motion_actmax.png"
    path.write_bytes(render._png(render._to_uint8(grid)))
    print(path.relative_to(ROOT))


def main() -> None:
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    svc = VizService(
        model, torchvision_spec("alexnet", weights="random"), device=torch.device("cpu"), name="alexnet_viz"
    )
    image = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    [reply] = svc.handle([{"data": image, "mode": "featuremaps,filters", "channels": "32"}])
    out = json.loads(reply.body)
    for kind in ("featuremaps", "filters"):
        for entry in out[kind]:
            path = ROOT / "docs" / f"alexnet_{kind}_{entry['layer'].replace('.', '_')}.png"
            path.write_bytes(base64.b64decode(entry["image"]))
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    which = sys.argv[1:] or ["alexnet", "shapes", "motion"]
    for name, make in (("alexnet", main), ("shapes", shapes_pictures), ("motion", motion_pictures)):
        if name in which:
            make()
