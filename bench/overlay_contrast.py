"""How well each overlay shows a map over its input, by kind of map: the measure the overlays' defaults were chosen by
(modes/shared.py, OVERLAYS; docs/usage.md, "Response").

The maps are the service's own (every map the service draws is recorded as it is drawn): the trained shapes model
on 12 generated shapes (2 of each class), and AlexNet (seeded random weights) on docs/grace_hopper.jpg, a photo.
Kinds: ``cam`` (Grad-CAM, Grad-CAM++: coarse, >= 0, jet), ``pixels`` (vanilla gradients, SmoothGrad, guided
backprop: sparse, >= 0, jet) and ``signed`` (integrated gradients, DeepLift, occlusion: -max .. +max, rdbu_r).
Each is drawn with each candidate blend (render.BLENDS) and opacity, and scored with tests/contrast.py: ``map_shown``
(Delta E between the overlay and the overlay of a map that is 0 everywhere, weighted by the map's magnitude: how far
its evidence stands out from no evidence) and ``photo_kept`` (the slope of the overlay's lightness against the
photo's, where the map says little). Medians over the maps of a kind.

Run: .venv/bin/python bench/overlay_contrast.py   (about a minute)
"""

from __future__ import annotations

import io
import statistics
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import build_model, random_state_dict, torchvision_spec  # noqa: E402
from examples.shapes.shapes_data import make_shapes  # noqa: E402
from tests.contrast import overlay_contrast  # noqa: E402
from tests.services import shapes_service  # noqa: E402
from vizserve import VizService, render  # noqa: E402

METHODS = {
    "cam": [("gradcam", "gradcam"), ("gradcam", "gradcam++")],
    "pixels": [("saliency", "vanilla"), ("saliency", "smoothgrad"), ("saliency", "guided_backprop")],
    "signed": [("saliency", "integrated_gradients"), ("saliency", "deeplift"), ("saliency", "occlusion")],
}
CANDIDATES = [("even", a, 1.0) for a in (0.3, 0.5, 0.7)] + [
    ("magnitude", a, g) for g in (1.0, 0.5, 0.35) for a in (0.6, 0.75, 0.9, 1.0)
]
#: The rule a pixel map's overlay (pixels, signed) is chosen by: at least this much of the photo's contrast kept
#: where the map says little on every set (Grad-CAM's even 0.5 keeps 0.33 to 0.46 here), then the most map shown on
#: the set that shows it least.
KEEP = 0.5


def recorded(svc: VizService, images: list[bytes]) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, bool]]]:
    """Every ``(input [3, H, W], map positions [H, W], signed)`` the service draws for the images, by kind."""
    seen: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    original = render.attribution_pngs

    def record(rgb, where, **kw):
        seen.append((rgb.clone(), where.clone(), kw.get("signed", False)))
        return original(rgb, where, **kw)

    render.attribution_pngs = record
    out: dict[str, list] = {}
    try:
        for kind, methods in METHODS.items():
            for mode, method in methods:
                before = len(seen)
                for data in images:
                    [reply] = svc.handle([{"data": data, "mode": mode, "method": method}])
                    assert reply.status == 200, reply.body
                out.setdefault(kind, []).extend(seen[before:])
    finally:
        render.attribution_pngs = original
    return out


def scores(maps, blend: str, opacity: float, gamma: float) -> tuple[float, float]:
    shown, kept = [], []
    old, render.MAGNITUDE_GAMMA = render.MAGNITUDE_GAMMA, gamma
    try:
        for rgb, where, signed in maps:
            colormap = render.DIVERGING if signed else "jet"
            overlay = render._overlay(rgb, where, colormap, opacity, blend, signed)
            nothing = torch.full_like(where, 0.5 if signed else 0.0)  # a map that is 0 everywhere
            null = render._overlay(rgb, nothing, colormap, opacity, blend, signed)
            pictures = (render._to_uint8(t) for t in (rgb, null, overlay))
            s = overlay_contrast(*pictures, where.numpy(), signed)
            shown.append(s["map_shown"])
            kept.append(s["photo_kept"])
    finally:
        render.MAGNITUDE_GAMMA = old
    return statistics.median(shown), statistics.median(kept)


def png(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    torch.manual_seed(0)
    images, labels, _ = make_shapes(200, seed=2026)
    picked = [int(k) for c in range(6) for k in (labels == c).nonzero()[:2, 0]]
    sets = {"shapes": recorded(shapes_service(), [png(images[k]) for k in picked])}
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    alexnet = VizService(model, torchvision_spec("alexnet", weights="random"), device=torch.device("cpu"),
                         name="alexnet_viz")  # fmt: skip
    sets["photo"] = recorded(alexnet, [(ROOT / "docs" / "grace_hopper.jpg").read_bytes()])
    counts = ", ".join(f"{name} {len(maps)}" for name, maps in sets["shapes"].items())
    print(f"maps a kind, shapes: {counts}; photo: {', '.join(str(len(m)) for m in sets['photo'].values())}\n")
    print("| kind | blend | opacity | gamma | shapes: map_shown | photo_kept | photo: map_shown | photo_kept |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in METHODS:
        rows = []
        for blend, opacity, gamma in CANDIDATES:
            got = [scores(sets[name][kind], blend, opacity, gamma) for name in sets]
            rows.append(((blend, opacity, gamma), got))
            g = f"{gamma:g}" if blend == "magnitude" else ""
            cells = " | ".join(f"{shown:.1f} | {kept:.2f}" for shown, kept in got)
            print(f"| {kind} | {blend} | {opacity:g} | {g} | {cells} |")
        fit = [(min(s for s, _ in got), c) for c, got in rows if min(k for _, k in got) >= KEEP]
        if fit and kind != "cam":  # a CAM keeps Grad-CAM's picture, even at 0.5 (docs/usage.md)
            shown, (blend, opacity, gamma) = max(fit)
            print(f"| {kind}: chosen by the rule | {blend} | {opacity:g} | {gamma:g} | least map_shown {shown:.1f} |")


if __name__ == "__main__":
    main()
