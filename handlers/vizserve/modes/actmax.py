"""actmax: preferred images of classes, channels and units, all targets of a request optimized as one batch."""

from __future__ import annotations

import re

from cnnviz import InvalidOption, Objective, Optimization, Settings, Target
from cnnviz.actmax import CLASS_SCORES

from ..options import Option, as_int, as_names
from .optimizing import COMMON, Optimizing
from .shared import CHANNEL, LAYER, add_animation, class_index

MAX_TARGETS = 64

UNIT_Y = Option("y", "int", None, "a unit's row in a [C, H, W] layer instead of the channel's mean", 0, 100_000,
                default_text="none: the whole channel")  # fmt: skip
UNIT_X = Option("x", "int", None, "a unit's column in a [C, H, W] layer", 0, 100_000,
                default_text="none: the whole channel")  # fmt: skip
UNIT_T = Option("t", "int", None, "video models: the unit's frame in a [C, T, H, W] layer (with y and x)", 0, 100_000,
                default_text="none: the unit's mean over frames")  # fmt: skip
CLASS_SCORE = Option("class_score", "choice", lambda s: "margin" if s.spec.modality == "video" else "logprob",
                     "what a class target maximizes: its log-probability, its logit, or its margin over the best "
                     "other class", choices=CLASS_SCORES,
                     default_text="margin for video models, logprob for images")  # fmt: skip
INIT_WEIGHT = Option("init_weight", "float", 0.0, "with init=image: how strongly the result stays near it", 0.0, 100.0)


def channel_list(value, count: int, labels) -> list[int]:
    """``3``, ``3,7,9``, ``0-15`` or a mix; class labels too when ``labels`` is given."""
    out: list[int] = []
    for part in as_names("channel", value):
        span = re.fullmatch(r"(\d{1,9})\s*-\s*(\d{1,9})", part)
        if span:
            lo, hi = int(span.group(1)), int(span.group(2))
            if not lo <= hi < count:
                raise InvalidOption(f"option 'channel': range {part[:40]!r} must lie within 0..{count - 1}")
            out.extend(range(lo, hi + 1))
        elif labels is not None:
            out.append(class_index(part, labels, "channel"))
        else:
            out.append(as_int("channel", part, 0, count - 1))
        if len(out) > MAX_TARGETS:
            raise InvalidOption(
                f"option 'channel' asks for more than {MAX_TARGETS} targets; at most {MAX_TARGETS} a request"
            )
    return out


class Actmax(Optimizing):
    name = "actmax"
    summary = "preferred images: inputs optimized to excite classes, channels or units (no input needed)"
    options = (LAYER.but(None, "the classes (the model's output)"), CHANNEL.but(None, "(required)"), UNIT_Y, UNIT_X,
               UNIT_T, CLASS_SCORE, *COMMON, INIT_WEIGHT)  # fmt: skip

    def finish(self, values, served, fields):
        values = super().finish(values, served, fields)
        if values["channel"] is None:
            raise InvalidOption("mode actmax needs option 'channel': a class (index or label; with no 'layer'), or "
                                "channels of 'layer' such as 3, 3,7,9 or 0-15")  # fmt: skip
        layer = served.table.resolve([values["layer"]])[0] if values["layer"] is not None else ""
        shape = served.table[layer].output_shape if layer else (len(served.labels),)
        if not shape:
            raise InvalidOption(f"layer {layer!r} has no tensor output to maximize")
        classes = not layer or tuple(shape) == (len(served.labels),)
        channels = channel_list(values["channel"], shape[0], served.labels if classes else None)
        y = x = t = None
        if values["t"] is not None and len(shape) != 4:
            raise InvalidOption(f"option 't' picks a frame of a video layer [C, T, H, W]; {layer or 'the output'} "
                                f"outputs {list(shape)}")  # fmt: skip
        if values["y"] is not None or values["x"] is not None or values["t"] is not None:
            if len(shape) < 3:
                raise InvalidOption(f"options 'y' and 'x' pick a unit of a [C, H, W] layer; {layer or 'the output'} "
                                    f"outputs {list(shape)}")  # fmt: skip
            h, w = shape[-2:]  # a video layer [C, T, H, W]: without t, the unit's mean over frames
            y = as_int("y", values["y"] if values["y"] is not None else h // 2, 0, h - 1)
            x = as_int("x", values["x"] if values["x"] is not None else w // 2, 0, w - 1)
            if values["t"] is not None:
                t = as_int("t", values["t"], 0, shape[1] - 1)
        values["targets"] = tuple(Target(layer, c, y, x, t) for c in channels)
        return values

    def targets(self, values):
        return len(values["targets"])

    def start(self, served, values, x):
        settings = Settings(**self.settings(served, values, x, None), classes=values["class_score"])
        targets = list(values["targets"])
        objective = Objective(served.model, targets, settings.classes)
        return Optimization(served.model, len(targets), objective, settings)

    def present(self, served, values, result):
        targets = list(values["targets"])
        entries = [
            self.entry(
                values, result, k, layer=t.layer or "classes", channel=t.channel,
                **({"label": served.labels[t.channel]} if not t.layer else {}),
                **({"y": t.y, "x": t.x} if t.y is not None else {}),
                **({"t": t.t} if t.t is not None else {}),
            )
            for k, t in enumerate(targets)
        ]  # fmt: skip
        if result.images.dim() == 5:  # preferred videos: each animated too
            for entry, video in zip(entries, result.images, strict=True):
                add_animation(entry, values, video.transpose(0, 1), served)
        return entries
