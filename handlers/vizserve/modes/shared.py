"""Options and helpers that several modes share (declared once here, so a name means one thing everywhere)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cnnviz import (
    CAM_METHODS,
    MAX_FAITHFULNESS_STEPS,
    SALIENCY_METHODS,
    InvalidOption,
    baseline,
    clip_text,
    deletion_insertion,
)

from .. import render
from ..animate import animation
from ..options import Option, as_text
from ..passes import Passes, memory_of, pass_batch, picture_pixels
from ..served import Served

LAYER = Option("layer", "text", None, "the one layer a mode looks at", allowed_text="a module name exactly as "
               "model.named_modules() spells it (mode=layers lists them); gradcam, deconv and invert need feature "
               "maps [C, H, W]")  # fmt: skip
TARGET = Option("target", "text", None, "the class to explain", default_text="the top-1 class",
                allowed_text="a class index, or a label (case-insensitive: target=tabby)")  # fmt: skip
CHANNEL = Option("channel", "text", None, "which channels of 'layer' (actmax: the targets, up to 64, each one "
                 "image, or a sum of terms)", allowed_text="deconv: one index; actmax: 3, 3,7,9, 0-15 or a mix, and "
                 "without 'layer' classes by index or label (tabby,goldfish); each target may be terms joined by + "
                 "and -, weighted: 3+7, 0.5*3-1*7, -features.8:12 (LAYER:CHANNEL: another layer), "
                 "tabby-goldfish")  # fmt: skip
METHOD = Option("method", "names", None, "the method of each attribution mode asked", allowed_text=f"gradcam: "
                f"{', '.join(CAM_METHODS)}; saliency: {', '.join(SALIENCY_METHODS)}; a comma list when both modes "
                "are asked")  # fmt: skip
FAITHFULNESS = Option("faithfulness", "bool", False, "add the map's deletion and insertion curves (Petsiuk et al. "
                      "2018): the target's probability as the pixels the map ranks first are deleted (to black), "
                      "or inserted into a blurred input, and the area under each")  # fmt: skip
FAITHFULNESS_STEPS = Option("faithfulness_steps", "int", 16, "faithfulness: points on each curve after the first "
                            "(each costs a forward pass per curve)", 1, MAX_FAITHFULNESS_STEPS)  # fmt: skip
COLORMAP = Option("colormap", "choice", None, "the colour map of the map's pictures (matplotlib's names; rdbu_r and "
                  "bwr: blue-white-red); a signed map spans -max .. +max, so that 0 is the middle colour",
                  choices=tuple(render.COLORMAPS), default_text=f"jet; {render.DIVERGING} for signed maps (blue "
                  "negative, white 0, red positive)")  # fmt: skip
#: How each kind of map is laid over its input (render.BLENDS) and its opacity when 'opacity' is not given. A CAM
#: (coarse, every pixel has a value, >= 0, jet): evenly at 0.5, Grad-CAM's usual picture. A map of the input's
#: pixels (saliency: sparse; a signed one is white at 0, and evenly at 0.5 it washed the photo out and was nearly
#: invisible over it): weighted by its magnitude, over the input in grey, at most 1 (>= 0) or 0.9 (signed) the map's
#: colour. Chosen by the contrast bench/overlay_contrast.py measures (docs/usage.md, "Response"): the most map
#: shown that keeps at least half the photo's contrast where the map says little.
OVERLAYS = {"cam": ("even", 0.5), "pixels": ("magnitude", 1.0), "signed": ("magnitude", 0.9)}
OPACITY = Option("opacity", "float", None, "how much of the overlay is the map's colour. gradcam: at every pixel (0 "
                 "the input alone, 1 the map alone); saliency: where the map is largest, each pixel weighted by the "
                 "map's magnitude there (|value| / max, to the power 0.35), over the input in grey, so that where the "
                 "map is 0 the input shows at any opacity", 0.0, 1.0,
                 default_text="gradcam 0.5 (even); saliency, where the map is largest, 1 (a map >= 0) or 0.9 (a "
                 "signed map)")  # fmt: skip


def class_index(value: Any, labels: Sequence[str], name: str = "target") -> int:
    """A class index, or a label (case-insensitive), checked against this model's classes."""
    text = as_text(name, value)
    if re.fullmatch(r"\d{1,9}", text) and int(text) < len(labels):
        return int(text)
    folded = {label.lower(): i for i, label in enumerate(labels)}
    if text.lower() in folded:
        return folded[text.lower()]
    close = difflib.get_close_matches(text.lower()[:200], folded, n=3)
    hint = f"; did you mean {', '.join(repr(labels[folded[c]]) for c in close)}?" if close else ""
    raise InvalidOption(f"option {name!r} must be a class index 0..{len(labels) - 1} or a label of this model, "
                        f"got {clip_text(text, 60)!r}{hint}")  # fmt: skip


def layer_of(values: Mapping[str, Any], served: Served, default: str | None, need: str = "spatial") -> str:
    """The ``layer`` option resolved against the model's table, or ``default``."""
    name = values["layer"] if values["layer"] is not None else default
    if not name:
        raise InvalidOption("this model has no layer with feature maps for this mode; name one with option 'layer'")
    return served.table.resolve([name], need=need)[0]


def pick_method(values: Mapping[str, Any], methods: Sequence[str], default: str) -> str:
    """The last of the asked ``method`` names that this mode has (the parser checked every name has a mode)."""
    mine = [m for m in values["method"] or () if m in methods]
    return mine[-1] if mine else default


def targets_of(values: Sequence[Mapping[str, Any]], logits: torch.Tensor) -> torch.Tensor:
    """Each row's asked class, or its top-1 class where none was asked (``-1``)."""
    asked = torch.tensor([v["target"] for v in values], device=logits.device)
    return torch.where(asked < 0, logits.argmax(1), asked)


def number(v: float) -> str:
    """A value for a picture's scale: 3 significant digits (``0.0321``, ``13.7``, ``3.21e-05``)."""
    return f"{v:.3g}"


def probability(p: float) -> str:
    """A score for a picture's title: two decimals (``0.87``), or one digit below 0.005 (``0.0003``)."""
    return f"{p:.2f}" if p >= 0.005 else f"{p:.1g}"


def map_scale(heat: torch.Tensor, signed: bool) -> tuple[float, torch.Tensor, tuple[str, ...]]:
    """``(max, positions, ticks)``: a map's largest value (``signed``: magnitude), its values as positions in [0, 1]
    along a colour map (0 .. max; ``signed``: -max .. +max, 0 in the middle) and the colour bar's tick labels."""
    top = float(heat.abs().max() if signed else heat.max())
    if signed:
        where = 0.5 + 0.5 * heat / top if top > 0 else torch.full_like(heat, 0.5)
        return top, where, (f"-{number(top)}", "0", f"+{number(top)}")
    return top, (heat / top if top > 0 else heat.clamp(0, 0)), ("0", number(max(top, 0.0)))


def colormap_of(values, signed: bool) -> str:
    """The asked ``colormap``, else the default: diverging for a signed map, jet otherwise."""
    return values["colormap"] or (render.DIVERGING if signed else "jet")


def overlay_of(values, pixels: bool, signed: bool) -> tuple[str, float]:
    """``(blend, opacity)`` of a map's overlay (:data:`OVERLAYS`): a map of the input's ``pixels`` (saliency,
    ``signed`` or not) or a CAM's; the asked ``opacity`` where there is one."""
    blend, opacity = OVERLAYS[("signed" if signed else "pixels") if pixels else "cam"]
    return blend, opacity if values["opacity"] is None else values["opacity"]


def attribution_entry(
    served: Served, values, x, heat, target: int, probs, *, signed: bool = False, pixels: bool = False, **about
) -> dict[str, Any]:
    """Pictures and numbers for one map ``heat [*S]`` of input ``x [C, *S]``: >= 0, or ``signed`` (then ``max``
    is the largest magnitude, and the pictures span -max .. +max in a diverging colour map by default); ``pixels``:
    a map of the input's pixels (saliency), else a CAM (:data:`OVERLAYS`). Each picture's title names the method,
    layer, class and score; its colour bar gives the scale."""
    top, where, ticks = map_scale(heat, signed)
    where = where.cpu()
    label, score = served.labels[target], float(probs[target])
    colormap = colormap_of(values, signed)
    blend, opacity = overlay_of(values, pixels, signed)
    method = about.get("method", "map")
    what = f"{method} of {about['layer']}" if about.get("layer") else method
    title = f"{what} - {label} {probability(score)}"  # a clip's pictures add how its frames are laid out
    seen = served.seen(x)
    image, heatmap = render.attribution_pngs(seen, where, title=title, ticks=ticks, colormap=colormap,
                                             opacity=opacity, blend=blend, signed=signed)  # fmt: skip
    entry = {
        **about,
        "target": target,
        "label": label,
        "score": score,
        "signed": signed,
        "max": top,
        "image": image,
        "heatmap": heatmap,
    }
    if heat.dim() == 3:  # a clip: the overlays animated too
        frames = render.overlay_frames(seen, where, opacity, colormap, blend=blend, signed=signed)
        add_animation(entry, values, frames, served)
    if values["raw"]:
        entry["raw"] = render.npy_bytes(heat)
    return entry


def attribution_cost(served: Served, values, shape, *, inputs: float = 0, grad_inputs: float = 0, batch: int = 1,
                     knob=None) -> Passes:  # fmt: skip
    """An attribution mode's cost: its own passes, the faithfulness curves' (2 x (steps + 1) forward passes, in
    batches of at most 32, or what fits), and the pictures of one map (the input beside its overlay, the map alone;
    a clip's strips and animation): :func:`attribution_entry` makes them."""
    frames = shape[1] if len(shape) == 4 else 1
    pictures = picture_pixels(*shape[-2:], 3, frames)  # the input beside its overlay, and the map
    if frames > 1:  # the overlays animated, each frame at least 224 px
        pictures += frames * picture_pixels(*shape[-2:])
    if values["faithfulness"]:
        points = 2 * (values["faithfulness_steps"] + 1)
        inputs += points
        batch = max(batch, min(points, faithfulness_batch(served, values, shape)))
    raw = math.prod(shape[1:]) * 4 if values["raw"] else 0
    return Passes(inputs=inputs, grad_inputs=grad_inputs, batch=batch, grad=grad_inputs > 0, pictures=pictures,
                  raw_bytes=raw, knob=knob)  # fmt: skip


def faithfulness_batch(served: Served, values, shape) -> int:
    """Inputs a pass of the faithfulness curves holds: 32, or what fits the request's memory."""
    return pass_batch(served, shape, False, memory_of(served, values), 32)


def faithfulness_fields(served: Served, x, maps, targets, values) -> list[dict[str, Any]]:
    """Each row's ``faithfulness`` entry field (deletion and insertion curves of its map ``maps[k]``, with the
    options of ``values[0]``: a batch shares them), or nothing where it was not asked."""
    v0 = values[0]
    if not v0["faithfulness"]:
        return [{} for _ in values]
    black = baseline("black", served.mean, served.std).to(x.device)
    f = deletion_insertion(served.model, x, maps, targets, steps=v0["faithfulness_steps"], deleted=black[None],
                           batch=faithfulness_batch(served, v0, x.shape[1:]))  # fmt: skip
    return [
        {
            "faithfulness": {
                "deletion": [round(float(p), 5) for p in f.deletion[k]],
                "insertion": [round(float(p), 5) for p in f.insertion[k]],
                "deletion_auc": round(float(f.deletion_auc[k]), 5),
                "insertion_auc": round(float(f.insertion_auc[k]), 5),
            }
        }
        for k in range(len(values))
    ]


def add_animation(entry: dict[str, Any], values, frames: torch.Tensor, served: Served) -> None:
    """``entry["animation"]``: ``frames`` ``[T, 3, H, W]`` in [0, 1] in the request's animation format, played at
    the model's frame rate (at most 8 frames a second, so that a short clip can be seen)."""
    fps = min(8.0, served.spec.preprocess.fps or 8.0)
    entry["animation"], entry["animation_type"] = animation(frames, values["animation"], fps)
