"""What a request asks for, read from form fields or a JSON body and checked before any work is done.

TorchServe hands a handler one dict per request: ``{"body": ...}`` for a whole body (raw bytes, or the object of
an ``application/json`` body), or one key per multipart/url-encoded form field. Query parameters never arrive.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnviz import SALIENCY_METHODS, InvalidInput, InvalidOption, LayerTable

__all__ = [
    "CAM_METHODS", "MODES", "OPTIONS", "Attribution", "Optimization", "VizRequest", "fields_of", "parse_request",
]  # fmt: skip

#: Modes, in the order their results appear. ``classify`` runs whenever an image is given.
MODES = ("classify", "featuremaps", "filters", "layers", "gradcam", "saliency", "deconv", "actmax", "invert")
_NEEDS_IMAGE = {"classify", "featuremaps", "gradcam", "saliency", "deconv", "invert"}
# format=png returns the first picture of these modes, in this order
_PICTURE_MODES = ("gradcam", "saliency", "deconv", "actmax", "invert", "featuremaps", "filters")
CAM_METHODS = ("gradcam", "gradcam++", "guided_gradcam")
#: Every option a request may carry, with its default; anything else is refused so that typos do not pass silently.
OPTIONS: dict[str, str] = {
    "data": "the image (bytes, or base64 text in JSON) or a .npy float32 array [3, H, W]",
    "mode": "classify",
    "topk": "5",
    "layers": "the first and the last convolution",
    "channels": "64",
    "raw": "false",
    "format": "json",
    "normalize": "channel",
    "method": "gradcam for mode gradcam, vanilla for mode saliency",
    "target": "the top-1 class",
    "layer": "the last convolutional stage (gradcam, deconv)",
    "channel": "the most active one (deconv)",
    "samples": "16 (smoothgrad)",
    "noise": "0.15 (smoothgrad)",
    "steps": "32 (integrated_gradients)",
    "baseline": "black (integrated_gradients)",
    "y": "none: a whole channel (actmax: the unit's row)",
    "x": "none: a whole channel (actmax: the unit's column)",
    "param": "fft (actmax, invert)",
    "optimizer": "adam (actmax, invert)",
    "lr": "0.05 (actmax, invert)",
    "size": "the model's input size (actmax, invert)",
    "seed": "0 (actmax, invert)",
    "init": "noise (actmax, invert): zeros, noise or image",
    "init_weight": "0 (actmax with init=image)",
    "l1": "0 (actmax, invert)",
    "l2": "0 (actmax, invert)",
    "tv": "0 for actmax, 0.05 for invert",
    "blur_every": "0 (actmax, invert; pixel parameters)",
    "transforms": "true for actmax, false for invert",
    "stream": "false (actmax, invert): progress as newline-delimited JSON",
    "precision": "auto (actmax, invert): bfloat16 where the hardware supports it, else float32",
}
MAX_LAYERS = 16
#: Caps of the attribution options, each ``(default, lowest, highest)``.
SAMPLES, STEPS, NOISE = (16, 1, 64), (32, 1, 128), (0.15, 0.0, 1.0)
BASELINES = ("black", "zero", "white")
#: Caps of the optimization options (actmax, invert).
OPT_STEPS, SIZE, LR, PENALTY, BLUR, SEED = (256, 1, 2048), (16, 512), (0.0, 10.0), (0.0, 100.0), (0, 1000), 2**31 - 1
MAX_TARGETS = 64
_OPTIMIZING = {"actmax", "invert"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Attribution:
    """What the gradient modes (gradcam, saliency, deconv) were asked for; ``-1`` means "choose for me"."""

    cam_method: str
    saliency_method: str
    target: int  # class index; -1: the top-1 class
    layer: str  # for gradcam and deconv
    channel: int  # for deconv; -1: the most active
    samples: int
    noise: float
    steps: int
    baseline: str


@dataclass(frozen=True)
class Optimization:
    """What actmax or invert was asked for. ``targets`` are ``(layer, channel, y, x)`` with layer ``""`` for the
    model's classes; ``settings`` are keyword arguments of :class:`cnnviz.actmax.Settings`."""

    targets: tuple[tuple[str, int, int | None, int | None], ...]
    invert_layer: str
    init: str
    settings: dict[str, Any]
    stream: bool


@dataclass(frozen=True)
class VizRequest:
    """One checked request. ``data`` is the raw input bytes (image or .npy) or ``None``."""

    data: bytes | None
    modes: tuple[str, ...]
    topk: int
    layers: tuple[str, ...]
    channels: int | None  # None: all
    raw: bool
    format: str
    normalize: str
    attribution: Attribution | None = None
    optimization: Optimization | None = None

    def wants(self, mode: str) -> bool:
        return mode in self.modes

    @property
    def picture_mode(self) -> str | None:
        return next((m for m in _PICTURE_MODES if m in self.modes), None)


def fields_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The request's fields as one dict, whatever way they came (raw body, JSON body, form fields)."""
    if "body" not in item or "data" in item:
        return dict(item)
    body = item["body"]
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, (bytes, bytearray, str)):
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if raw.lstrip()[:1] == b"{":  # a JSON body sent without Content-Type: application/json
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise InvalidInput(f"request body looks like JSON but does not parse: {exc}") from exc
            if isinstance(obj, dict):
                return obj
        return {"data": raw}
    raise InvalidInput(f"request body must be an image, a .npy array or a JSON object; got JSON {type(body).__name__}")


def _text(name: str, value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InvalidOption(f"option {name!r} is not UTF-8 text") from exc
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    raise InvalidOption(f"option {name!r} must be text or a number, got {type(value).__name__}")


def _names(name: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else _text(name, value).split(",")
    return [t for t in (_text(name, v) for v in items) if t]


def _int(name: str, value: Any, lo: int, hi: int, alternative: str = "") -> int:
    text = _text(name, value)
    allowed = f"a whole number in {lo}..{hi}{alternative}"
    if not re.fullmatch(r"[+]?\d{1,9}", text) or not lo <= int(text) <= hi:
        raise InvalidOption(f"option {name!r} must be {allowed}, got {text[:40]!r}")
    return int(text)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = _text(name, value).lower()
    if text not in allowed:
        raise InvalidOption(f"option {name!r} must be one of {', '.join(allowed)}; got {text[:40]!r}")
    return text


def _bool(name: str, value: Any) -> bool:
    text = _text(name, value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidOption(f"option {name!r} must be true or false, got {text[:40]!r}")


def _data(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or None
    if isinstance(value, str):  # base64 text (JSON bodies, or a text form field), optionally a data: URL
        text = _DATA_URL.sub("", value.strip())
        try:
            return base64.b64decode(text, validate=True) or None
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"field 'data' is text but not valid base64: {exc}") from exc
    raise InvalidInput(f"field 'data' must be image bytes or base64 text, got {type(value).__name__}")


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    text = _text(name, value)
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and lo <= x <= hi):
        raise InvalidOption(f"option {name!r} must be a number in {lo}..{hi}, got {text[:40]!r}")
    return x


def _target(value: Any, labels: Sequence[str], name: str = "target") -> int:
    """A class index, or a label (case-insensitive), checked against this model's classes."""
    text = _text(name, value)
    if re.fullmatch(r"\d{1,9}", text) and int(text) < len(labels):
        return int(text)
    folded = {label.lower(): i for i, label in enumerate(labels)}
    if text.lower() in folded:
        return folded[text.lower()]
    close = difflib.get_close_matches(text.lower(), folded, n=3)
    hint = f"; did you mean {', '.join(repr(labels[folded[c]]) for c in close)}?" if close else ""
    raise InvalidOption(f"option {name!r} must be a class index 0..{len(labels) - 1} or a label of this model, "
                        f"got {text[:60]!r}{hint}")  # fmt: skip


def _attribution(fields: Mapping[str, Any], modes: set[str], table: LayerTable, labels: Sequence[str]) -> Attribution:
    methods = _names("method", fields.get("method", ""))
    cam, sal = "gradcam", "vanilla"
    for m in methods:
        if m in CAM_METHODS and "gradcam" in modes:
            cam = m
        elif m in SALIENCY_METHODS and "saliency" in modes:
            sal = m
        else:
            allowed = [*(CAM_METHODS if "gradcam" in modes else ()), *(SALIENCY_METHODS if "saliency" in modes else ())]
            raise InvalidOption(f"unknown method {m!r} for mode {', '.join(sorted(modes & {'gradcam', 'saliency'}))}; "
                                f"methods: {', '.join(allowed)}")  # fmt: skip
    layer = table.cam_layer or ""
    if "layer" in fields:
        [layer] = table.resolve([_text("layer", fields["layer"])], need="spatial") or [layer]
    channel = -1
    if "channel" in fields and "deconv" in modes:
        limit = (table[layer].output_shape or (1,))[0] - 1
        channel = _int("channel", fields["channel"], 0, limit)
    return Attribution(
        cam_method=cam,
        saliency_method=sal,
        target=_target(fields["target"], labels) if "target" in fields else -1,
        layer=layer,
        channel=channel,
        samples=_int("samples", fields.get("samples", SAMPLES[0]), *SAMPLES[1:]),
        noise=_float("noise", fields.get("noise", NOISE[0]), *NOISE[1:]),
        steps=_int("steps", fields.get("steps", STEPS[0]), *STEPS[1:]),
        baseline=_choice("baseline", fields.get("baseline", "black"), BASELINES),
    )


def _channels(value: Any, count: int, labels: Sequence[str] | None) -> list[int]:
    """``3``, ``3,7,9``, ``0-15`` or a mix; class labels too when ``labels`` is given."""
    out: list[int] = []
    for part in _names("channel", value):
        span = re.fullmatch(r"(\d{1,9})\s*-\s*(\d{1,9})", part)
        if span:
            lo, hi = int(span.group(1)), int(span.group(2))
            if not lo <= hi < count:
                raise InvalidOption(f"option 'channel': range {part!r} must lie within 0..{count - 1}")
            out.extend(range(lo, hi + 1))
        elif labels is not None:
            out.append(_target(part, labels, "channel"))
        else:
            out.append(_int("channel", part, 0, count - 1))
        if len(out) > MAX_TARGETS:
            raise InvalidOption(
                f"option 'channel' asks for more than {MAX_TARGETS} targets; at most {MAX_TARGETS} a request"
            )
    return out


def _optimization(fields: Mapping[str, Any], modes: set[str], table: LayerTable, labels: Sequence[str]) -> Optimization:
    actmax = "actmax" in modes
    targets: list[tuple[str, int, int | None, int | None]] = []
    if actmax:
        if "channel" not in fields:
            raise InvalidOption("mode actmax needs option 'channel': a class (index or label; with no 'layer'), or "
                                "channels of 'layer' such as 3, 3,7,9 or 0-15")  # fmt: skip
        layer = table.resolve([_text("layer", fields["layer"])])[0] if "layer" in fields else ""
        shape = table[layer].output_shape if layer else (len(labels),)
        if not shape:
            raise InvalidOption(f"layer {layer!r} has no tensor output to maximize")
        classes = not layer or tuple(shape) == (len(labels),)
        channels = _channels(fields["channel"], shape[0], labels if classes else None)
        y = x = None
        if "y" in fields or "x" in fields:
            if len(shape) != 3:
                raise InvalidOption(f"options 'y' and 'x' pick a unit of a [C, H, W] layer; {layer or 'the output'} "
                                    f"outputs {list(shape)}")  # fmt: skip
            y = _int("y", fields.get("y", shape[1] // 2), 0, shape[1] - 1)
            x = _int("x", fields.get("x", shape[2] // 2), 0, shape[2] - 1)
        targets = [(layer, c, y, x) for c in channels]
    invert_layer = ""
    if "invert" in modes:
        invert_layer = table.default_layers[-1] if "layer" not in fields or actmax else _text("layer", fields["layer"])
        invert_layer = table.resolve([invert_layer], need="spatial")[0]
    init = _choice("init", fields.get("init", "noise"), ("zeros", "noise", "image"))
    if init == "image" and "data" not in fields:
        raise InvalidInput("init=image starts from the uploaded image: send one in field 'data'")
    only_invert = not actmax
    settings = {
        "size": _int("size", fields.get("size", table.input_shape[-1]), *SIZE),
        "steps": _int("steps", fields.get("steps", OPT_STEPS[0]), *OPT_STEPS[1:]),
        "param": _choice("param", fields.get("param", "fft"), ("fft", "pixel")),
        "optimizer": _choice("optimizer", fields.get("optimizer", "adam"), ("adam", "sgd")),
        "lr": _float("lr", fields.get("lr", 0.05), *LR),
        "transforms": _bool("transforms", fields.get("transforms", not only_invert)),
        "l1": _float("l1", fields.get("l1", 0.0), *PENALTY),
        "l2": _float("l2", fields.get("l2", 0.0), *PENALTY),
        "tv": _float("tv", fields.get("tv", 0.05 if only_invert else 0.0), *PENALTY),
        "blur_every": _int("blur_every", fields.get("blur_every", 0), *BLUR),
        "seed": _int("seed", fields.get("seed", 0), 0, SEED),
        "init_weight": _float("init_weight", fields.get("init_weight", 0.0), *PENALTY),
        "precision": _choice("precision", fields.get("precision", "auto"), ("auto", "float32", "bfloat16")),
    }
    if settings["lr"] <= 0:
        raise InvalidOption("option 'lr' must be above 0")
    stream = _bool("stream", fields.get("stream", False))
    return Optimization(tuple(targets), invert_layer, init, settings, stream)


_OPTION_MODES = {
    "method": ("gradcam", "saliency"),
    "target": ("gradcam", "saliency"),
    "layer": ("gradcam", "deconv", "actmax", "invert"),
    "channel": ("deconv", "actmax"),
    "samples": ("saliency",),
    "noise": ("saliency",),
    "steps": ("saliency", "actmax", "invert"),
    "baseline": ("saliency",),
    **{k: ("actmax",) for k in ("y", "x", "init_weight")},
    **{k: ("actmax", "invert") for k in ("param", "optimizer", "lr", "size", "seed", "init", "l1", "l2", "tv")},
    **{k: ("actmax", "invert") for k in ("blur_every", "transforms", "stream", "precision")},
}


def parse_request(
    fields: Mapping[str, Any], table: LayerTable, labels: Sequence[str], *, explain: bool = False
) -> VizRequest:
    """Check every field against what this model allows; raise a :class:`cnnviz.VizError` that names the problem.

    ``explain`` (TorchServe's ``/explanations`` endpoint) adds mode ``gradcam``.
    """
    unknown = sorted(set(fields) - set(OPTIONS))
    if unknown:
        raise InvalidOption(f"unknown option {unknown[0]!r}; options: {', '.join(OPTIONS)}")
    num_classes = len(labels)
    data = _data(fields.get("data"))

    asked = (_names("mode", fields.get("mode", "classify")) or ["classify"]) + (["gradcam"] if explain else [])
    for m in asked:
        if m not in MODES:
            raise InvalidOption(f"unknown mode {m!r}; modes: {', '.join(MODES)}")
    modes = set(asked) | ({"classify"} if data is not None else set())
    if data is None:
        need = sorted(modes & _NEEDS_IMAGE)
        if need:
            raise InvalidInput(
                f"mode {need[0]} needs an image: send it as the request body, as form field 'data', or as base64 "
                f"in a JSON body's 'data' (modes without an image: filters, layers, actmax)"
            )

    topk = _int("topk", fields.get("topk", min(5, num_classes)), 1, min(1000, num_classes))
    channels_text = _text("channels", fields.get("channels", 64)).lower()
    channels = None if channels_text == "all" else _int("channels", channels_text, 1, 100_000, " or 'all'")
    fmt = _choice("format", fields.get("format", "json"), ("json", "png"))
    normalize = _choice("normalize", fields.get("normalize", "channel"), ("channel", "layer"))
    raw = _bool("raw", fields.get("raw", False))

    layer_modes = [m for m in ("featuremaps", "filters") if m in modes]
    if "layers" in fields:
        if not layer_modes:
            raise InvalidOption("option 'layers' is used by modes featuremaps and filters; add one of them to mode")
        names = _names("layers", fields["layers"])
        if not names:
            raise InvalidOption(
                "option 'layers' is empty; give module names such as " + ", ".join(table.default_layers)
            )
        if len(names) > MAX_LAYERS:
            raise InvalidOption(f"option 'layers' names {len(names)} layers; at most {MAX_LAYERS} per request")
    else:
        names = table.default_layers
    for m in layer_modes:
        table.resolve(names, need="spatial" if m == "featuremaps" else "filters")
    layers = tuple(table.resolve(names))

    for option, users in _OPTION_MODES.items():
        if option in fields and not modes & set(users):
            names = users[0] if len(users) == 1 else ", ".join(users[:-1]) + " and " + users[-1]
            raise InvalidOption(f"option {option!r} is used by mode {names}; add it to mode")
    attribution = _attribution(fields, modes, table, labels) if modes & {"gradcam", "saliency", "deconv"} else None
    optimization = _optimization(fields, modes, table, labels) if modes & _OPTIMIZING else None

    ordered = tuple(m for m in MODES if m in modes)
    request = VizRequest(data, ordered, topk, layers, channels, raw, fmt, normalize, attribution, optimization)
    if fmt == "png" and request.picture_mode is None:
        raise InvalidOption(f"format=png returns a picture: add one of the modes {', '.join(_PICTURE_MODES)}")
    return request
