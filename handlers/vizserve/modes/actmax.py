"""actmax: preferred images of classes, channels, units, sums of them and directions, all of a request as one batch.

Option ``channel`` gives the targets, comma-separated, each one image (``images`` of them with that option); each
target may be an expression of terms, read here into :mod:`cnnviz.objectives` terms (never evaluated as code):

    target := ["+" | "-"] term (("+" | "-") term)*       at most 16 terms
    term   := [weight "*"] ref                            weight: a number above 0, at most 1000
    ref    := CHANNEL | LABEL | LAYER ":" CHANNEL         LAYER:CHANNEL split at the last ":"

A bare ``CHANNEL`` is a channel of ``layer`` (without ``layer``: a class index or label); ``N-M`` of two plain
numbers keeps its meaning, the range N..M (write ``-7+3`` or ``3-1*7`` for a difference). Class labels may hold
``-`` (ImageNet's ``three-toed sloth``): at each term the longest text up to a sign that reads as a term is taken.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from cnnviz import (
    Direction,
    Diversity,
    InvalidInput,
    InvalidOption,
    LayerHooks,
    Objective,
    Optimization,
    Settings,
    Sum,
    Target,
    Term,
    UnknownLayer,
    clip_text,
    restore_mode,
)
from cnnviz.objectives import CLASS_SCORES

from ..options import Option, as_int, as_names, as_text
from .optimizing import COMMON, COPIES, LR, ROBUSTNESS, SIZE, STEPS, Optimizing
from .shared import CHANNEL, LAYER, add_animation, class_index

MAX_TARGETS = 64  # images one request optimizes: targets x images
MAX_TERMS = 16  # terms of one target
MAX_CHANNEL_TEXT = 4096  # characters of option 'channel'
MAX_WEIGHT = 1000.0
MAX_DIRECTION_TEXT = 200_000  # characters of option 'direction' (8192 channels of 24 characters)
_SPAN = 8  # a term spans at most this many pieces between signs ('three-toed sloth', '1e-3*5')
_RANGE = re.compile(r"(\d{1,9})\s*-\s*(\d{1,9})")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

UNIT_Y = Option("y", "int", None, "a unit's row in a [C, H, W] layer instead of the channel's mean", 0, 100_000,
                default_text="none: the whole channel")  # fmt: skip
UNIT_X = Option("x", "int", None, "a unit's column in a [C, H, W] layer", 0, 100_000,
                default_text="none: the whole channel")  # fmt: skip
UNIT_T = Option("t", "int", None, "video models: the unit's frame in a [C, T, H, W] layer (with y and x)", 0, 100_000,
                default_text="none: the unit's mean over frames", modality="video")  # fmt: skip
CLASS_SCORE = Option("class_score", "choice", "margin", "what a class target maximizes: its log-probability, its "
                     "logit, or its margin over the best other class", choices=CLASS_SCORES)  # fmt: skip


def _default_size(served) -> int:
    side = served.spec.input_shape[-1]
    return side if served.spec.modality == "video" else max(min(128, side), served.spec.min_side or 16)


# actmax's defaults, measured on the shapes model with two judges trained apart from it (tests/core/
# test_shapes_actmax.py; docs/methods.md): the margin objective with twice lucent's transforms, two
# copies a step and 128 steps at lr 0.02 gave class images both judges read as their class (6/6 and 4-5/6 over three
# seeds); lucent's image defaults with the log-probability gave grey mottling read 4-5/6 and 3-5/6, and longer or
# faster runs of the margin filled the image with texture (4/6 and 2/6). Video keeps lr 0.05 (with 0.02 the second
# motion model misread "still"). 128 px as lucent's default: the default AlexNet class in seconds, VGG16 in under a
# minute, on a 2-core CPU.
ACTMAX_DEFAULTS = {
    "steps": STEPS.but(128),
    "lr": LR.but(lambda s: 0.05 if s.spec.modality == "video" else 0.02, "0.02 for images, 0.05 for video models"),
    "size": SIZE.but(_default_size, "the model's input size, at most 128 for images (lucent's default)"),
    "robustness": ROBUSTNESS.but(2.0, "2"),
    "copies": COPIES.but(2),
}
INIT_WEIGHT = Option("init_weight", "float", 0.0, "with init=image: how strongly the result stays near it", 0.0, 100.0)
DIRECTION = Option("direction", "text", None, "instead of 'channel': a direction in the channel space of 'layer'; "
                   "each image maximizes the cosine similarity of its activation vectors with it, averaged over "
                   "positions (lucent's direction)", default_text="none",
                   allowed_text="one number per channel of 'layer', comma-separated, or image: the uploaded image's "
                   "mean activation at 'layer'")  # fmt: skip
IMAGES = Option("images", "int", 1, "images per target, each from its own starting noise (targets x images: at "
                "most 64)", 1, MAX_TARGETS)  # fmt: skip
DIVERSITY = Option("diversity", "float", 0.0, "weight of Lucid's Gram-matrix diversity among the images of one "
                   "target (with images > 1)", 0.0, MAX_WEIGHT)  # fmt: skip
DIVERSITY_LAYER = Option("diversity_layer", "text", None, "the layer whose channels' Gram matrices diversity "
                         "compares", default_text="the first layer the target names; for classes the last default "
                         "feature-map layer", allowed_text="a module name exactly as model.named_modules() spells "
                         "it")  # fmt: skip


class _NoTerm(Exception):
    """A text that is not a term, found while looking for the longest one (no message built: that costs)."""


class _Reader:
    """Reads option 'channel' into one :class:`~cnnviz.Term` per target. ``layer`` (``""``: the classes) and its
    output ``shape`` are what a bare channel names; ``unit`` ``(y, x, t)`` applies to the terms of ``layer``."""

    def __init__(self, served, layer: str, shape: tuple[int, ...], unit: tuple | None) -> None:
        self.served, self.layer, self.shape, self.unit = served, layer, shape, unit
        self.labels = served.labels
        self.folded = {label.lower(): i for i, label in enumerate(self.labels)}

    def targets(self, value) -> list[Term]:
        if isinstance(value, (str, bytes, bytearray)) and len(value) > MAX_CHANNEL_TEXT:
            raise InvalidOption(f"option 'channel' is {len(value)} characters long; at most {MAX_CHANNEL_TEXT}")
        out: list[Term] = []
        for item in as_names("channel", value):
            if len(item) > MAX_CHANNEL_TEXT:
                raise InvalidOption(f"option 'channel' is longer than {MAX_CHANNEL_TEXT} characters")
            span = _RANGE.fullmatch(item)
            if span:
                lo, hi = int(span.group(1)), int(span.group(2))
                if not lo <= hi < self.shape[0]:
                    raise InvalidOption(f"option 'channel': range {item[:40]!r} must lie within 0..{self.shape[0] - 1}")
                out.extend(self._target(self.layer, c) for c in range(lo, hi + 1))
            else:
                out.append(self.expression(item))
            if len(out) > MAX_TARGETS:
                raise InvalidOption(
                    f"option 'channel' asks for more than {MAX_TARGETS} targets; at most {MAX_TARGETS} a request"
                )
        return out

    def expression(self, item: str) -> Term:
        """One target: terms joined by signs, each the longest text up to a sign that reads as a term."""
        pieces = re.split(r"([+-])", item)  # text, sign, text, sign, ..., text
        terms: list[tuple[float, Target]] = []
        sign, i = 1.0, 0
        if not pieces[0].strip() and len(pieces) > 1:  # a leading sign
            sign, i = (-1.0 if pieces[1] == "-" else 1.0), 2
        while True:
            for j in range(min(len(pieces) - 1, i + 2 * (_SPAN - 1)), i - 1, -2):
                try:
                    weight, target = self.term("".join(pieces[i : j + 1]).strip(), item, explain=j == i)
                    break
                except _NoTerm:
                    continue
            terms.append((sign * weight, target))
            if len(terms) > MAX_TERMS:
                raise InvalidOption(f"option 'channel': target {clip_text(item, 80)!r} has more than {MAX_TERMS} "
                                    f"terms; at most {MAX_TERMS}")  # fmt: skip
            if j + 1 >= len(pieces):
                break
            sign, i = (-1.0 if pieces[j + 1] == "-" else 1.0), j + 2
        return terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else Sum(tuple(terms))

    def term(self, text: str, item: str, explain: bool) -> tuple[float, Target]:
        """``[weight *] ref`` -> (weight, target); ``explain``: a bad text raises the 400 naming it, else
        :class:`_NoTerm`."""

        def bad(why: str) -> InvalidOption | _NoTerm:
            return InvalidOption(f"option 'channel': {why}, in {clip_text(item, 80)!r}") if explain else _NoTerm()

        if not text:
            raise bad("a term is missing (before a sign, after one, or between two)")
        weight = 1.0
        if "*" in text:
            written, _, text = (s.strip() for s in text.partition("*"))
            if not _NUMBER.fullmatch(written):
                raise bad(f"weight {clip_text(written, 40)!r} is not a number")
            weight = float(written)
            if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
                raise bad(f"weight {clip_text(written, 40)!r} must be above 0 and at most {MAX_WEIGHT:g}")
        if ":" in text:
            name, _, channel = (s.strip() for s in text.rpartition(":"))
            if name not in self.served.table:
                if not explain:
                    raise _NoTerm
                try:
                    self.served.table.resolve([name])
                except UnknownLayer as err:
                    raise UnknownLayer(f"option 'channel', term {clip_text(text, 60)!r}: {err.message}") from None
            shape = self.served.table[name].output_shape
            if not shape:
                raise bad(f"layer {name!r} has no tensor output to maximize")
            return weight, self._target(name, self._channel(name, shape, channel, item, explain))
        return weight, self._target(self.layer, self._channel(self.layer, self.shape, text, item, explain))

    def _channel(self, layer: str, shape: tuple[int, ...], text: str, item: str, explain: bool) -> int:
        classes = not layer or tuple(shape) == (len(self.labels),)
        if re.fullmatch(r"\d{1,9}", text) and int(text) < shape[0]:
            return int(text)
        if classes and text.lower() in self.folded:
            return self.folded[text.lower()]
        if not explain:
            raise _NoTerm
        if classes:
            try:
                class_index(text, self.labels, "channel")
            except InvalidOption as err:
                if text == item:
                    raise
                why = err.message.removeprefix("option 'channel' ")
                raise InvalidOption(f"option 'channel', target {clip_text(item, 80)!r}: {why}") from None
        raise InvalidOption(f"option 'channel' must be a whole number in 0..{shape[0] - 1} (a channel of layer "
                            f"{layer}), got {clip_text(text, 40)!r} in {clip_text(item, 80)!r}")  # fmt: skip

    def _target(self, layer: str, channel: int) -> Target:
        if self.unit is not None and layer == self.layer:
            return Target(layer, channel, *self.unit)
        return Target(layer, channel)


def direction_vector(value, channels: int) -> tuple[float, ...] | str:
    """Option 'direction': ``"image"``, or ``channels`` finite numbers, not all zero."""
    text = as_text("direction", value) if not isinstance(value, list) else None
    if text is not None and len(text) > MAX_DIRECTION_TEXT:
        raise InvalidOption(f"option 'direction' is {len(text)} characters long; at most {MAX_DIRECTION_TEXT}")
    if text is not None and text.lower() == "image":
        return "image"
    items = as_names("direction", value)
    if len(items) != channels:
        raise InvalidOption(f"option 'direction' needs one number per channel of 'layer' ({channels}), or 'image'; "
                            f"got {len(items)} items")  # fmt: skip
    out = []
    for n, item in enumerate(items):
        try:
            v = float(item)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and abs(v) <= 1e6):
            raise InvalidOption(f"option 'direction': item {n} ({clip_text(item, 40)!r}) must be a number within "
                                "-1e6..1e6")  # fmt: skip
        out.append(v)
    if not any(out):
        raise InvalidOption("option 'direction' is all zeros: no direction")
    return tuple(out)


def _first_layer(expression: Term) -> str:
    return next((t.layer for _, t in expression.parts() if t.layer), "")


def _with_vector(expression: Term, vector: tuple[float, ...]) -> Term:
    """``expression`` with the image's direction filled in (its :class:`Direction` whose vector is empty)."""
    if isinstance(expression, Direction) and not expression.vector:
        return replace(expression, vector=vector)
    if isinstance(expression, Sum):
        return Sum(tuple((w, _with_vector(t, vector)) for w, t in expression.terms))
    return expression


class Actmax(Optimizing):
    name = "actmax"
    summary = ("preferred images: inputs optimized to excite classes, channels, units, sums of them or a direction "
               "(no input needed)")  # fmt: skip
    options = (LAYER.but(None, "the classes (the model's output)"), CHANNEL.but(None, "(required, or direction)"),
               UNIT_Y, UNIT_X, UNIT_T, CLASS_SCORE, DIRECTION, IMAGES, DIVERSITY, DIVERSITY_LAYER,
               *(ACTMAX_DEFAULTS.get(o.name, o) for o in COMMON), INIT_WEIGHT)  # fmt: skip

    def finish(self, values, served, fields):
        values = super().finish(values, served, fields)
        if values["channel"] is None and values["direction"] is None:
            raise InvalidOption("mode actmax needs option 'channel': a class (index or label; with no 'layer'), or "
                                "channels of 'layer' such as 3, 3,7,9 or 0-15, or sums such as 3+7; or option "
                                "'direction'")  # fmt: skip
        if values["channel"] is not None and values["direction"] is not None:
            raise InvalidOption("options 'channel' and 'direction' each say what to maximize; give one of them")
        layer = served.table.resolve([values["layer"]])[0] if values["layer"] is not None else ""
        shape = served.table[layer].output_shape if layer else (len(served.labels),)
        if not shape:
            raise InvalidOption(f"layer {layer!r} has no tensor output to maximize")
        unit = None
        if values["t"] is not None and len(shape) != 4:
            raise InvalidOption(f"option 't' picks a frame of a video layer [C, T, H, W]; {layer or 'the output'} "
                                f"outputs {list(shape)}")  # fmt: skip
        if values["y"] is not None or values["x"] is not None or values["t"] is not None:
            if len(shape) < 3:
                raise InvalidOption(f"options 'y' and 'x' pick a unit of a [C, H, W] layer; {layer or 'the output'} "
                                    f"outputs {list(shape)}")  # fmt: skip
            if values["direction"] is not None:
                raise InvalidOption("options 'y', 'x' and 't' pick a unit of a channel target; a direction is taken "
                                    "over every position")  # fmt: skip
            h, w = shape[-2:]  # a video layer [C, T, H, W]: without t, the unit's mean over frames
            y = as_int("y", values["y"] if values["y"] is not None else h // 2, 0, h - 1)
            x = as_int("x", values["x"] if values["x"] is not None else w // 2, 0, w - 1)
            t = as_int("t", values["t"], 0, shape[1] - 1) if values["t"] is not None else None
            unit = (y, x, t)
        if values["direction"] is not None:
            if not layer:
                raise InvalidOption("option 'direction' is a direction in the channel space of a layer: name it "
                                    "with option 'layer'")  # fmt: skip
            vector = direction_vector(values["direction"], shape[0])
            if vector == "image":
                if "data" not in fields:
                    raise InvalidInput("direction=image reads the uploaded image: send one in field 'data'")
                if served.spec.modality == "video":
                    raise InvalidOption("direction=image reads an uploaded image, which video models do not take")
                bases: list[Term] = [Direction(layer, (), "image")]
            else:
                bases = [Direction(layer, vector)]
        else:
            bases = _Reader(served, layer, tuple(shape), unit).targets(values["channel"])
        images, weight = values["images"], values["diversity"]
        if len(bases) * images > MAX_TARGETS:
            raise InvalidOption(f"options 'channel' and 'images' ask for {len(bases) * images} images ({len(bases)} "
                                f"targets x {images}); at most {MAX_TARGETS} a request")  # fmt: skip
        if images > 1 and values["init"] != "noise":
            raise InvalidOption(f"option 'images' makes several images of each target, which differ by their "
                                f"starting noise; init={values['init']} starts them alike: use init=noise")  # fmt: skip
        if weight and images == 1:
            raise InvalidOption("option 'diversity' makes the images of one target differ: ask for several with "
                                "option 'images'")  # fmt: skip
        if values["diversity_layer"] is not None and not weight:
            raise InvalidOption("option 'diversity_layer' is where diversity is measured: give 'diversity' too")
        rows: list[Term] = []
        for base in bases:
            row = base
            if weight:
                at = values["diversity_layer"]
                at = served.table.resolve([at])[0] if at is not None else _first_layer(base)
                at = at or (served.spec.featuremap_layers or ("",))[-1]
                if not at:
                    raise InvalidOption("this model has no default feature-map layer for the diversity of classes: "
                                        "name one with option 'diversity_layer'")  # fmt: skip
                if not served.table[at].output_shape:
                    raise InvalidOption(f"option 'diversity_layer': layer {at!r} has no tensor output")
                row = base + weight * Diversity(at)
            rows.extend([row] * images)
        values["bases"], values["targets"] = tuple(bases), tuple(rows)
        return values

    def targets(self, values):
        return len(values["targets"])

    def start(self, served, values, x):
        settings = Settings(**self.settings(served, values, x, None), classes=values["class_score"])
        targets = list(values["targets"])
        if any(isinstance(b, Direction) and not b.vector for b in values["bases"]):
            vector = self.image_direction(served, values["layer"], x)
            targets = [_with_vector(t, vector) for t in targets]
        objective = Objective(served.model, targets, settings.classes)
        return Optimization(served.model, len(targets), objective, settings)

    @staticmethod
    def image_direction(served, layer: str, x: torch.Tensor) -> tuple[float, ...]:
        """The uploaded image's activation at ``layer``, averaged over positions ``[C]``."""
        with torch.no_grad(), restore_mode(served.model), LayerHooks(served.model, [layer], stop=True) as hooks:
            hooks.run(x[None].to(served.device))
        act = hooks.outputs[layer][0].float()
        vector = (act.flatten(1).mean(1) if act.dim() > 1 else act).cpu()
        if not vector.any():
            raise InvalidInput(f"the uploaded image's activation at {layer} is zero everywhere: it gives no direction")
        return tuple(vector.tolist())

    @staticmethod
    def title(about, video: bool) -> str:
        """What a preferred image maximizes, for its picture: a class by its label and index, a channel or unit
        of a layer, else the objective as written back."""
        if about.get("layer") == "classes":
            what = f"class {about['label']} ({about['channel']})"
        elif "channel" in about:
            unit = f" unit y={about['y']} x={about['x']}" if "y" in about else ""
            what = f"{about['layer']} channel {about['channel']}{unit}" + (f" t={about['t']}" if "t" in about else "")
        else:
            what = about["objective"]
        sample = f", sample {about['sample']}" if "sample" in about else ""
        return f"preferred {'video' if video else 'image'} of {what}{sample}"

    def present(self, served, values, result):
        images, bases = values["images"], values["bases"]
        entries = []
        for k, row in enumerate(values["targets"]):
            base = bases[k // images]
            about = {"objective": row.text(served.labels)}
            if isinstance(base, Target):
                about.update(layer=base.layer or "classes", channel=base.channel)
                if not base.layer:
                    about["label"] = served.labels[base.channel]
                if base.y is not None:
                    about.update(y=base.y, x=base.x)
                if base.t is not None:
                    about["t"] = base.t
            elif isinstance(base, Direction):
                about["layer"] = base.layer
            if images > 1:
                about["sample"] = k % images
            entries.append(self.entry(values, result, k, title=self.title(about, result.images.dim() == 5), **about))
        if result.images.dim() == 5:  # preferred videos: each animated too
            for entry, video in zip(entries, result.images, strict=True):
                add_animation(entry, values, video.transpose(0, 1), served)
        return entries
