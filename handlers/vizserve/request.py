"""What a request asks for, read from form fields or a JSON body and checked before any work is done.

The parser is generic: it knows the global options (:data:`GLOBAL_OPTIONS`) and reads every other option from the
declarations of the modes asked (:mod:`vizserve.modes`).

TorchServe hands a handler one dict per request: ``{"body": ...}`` for a whole body (raw bytes, or the object of
an ``application/json`` body), or one key per multipart/url-encoded form field. Query parameters never arrive.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnviz import InvalidInput, InvalidOption, clip_text

from .animate import ANIMATION_FORMATS
from .decode import parse_json
from .fields import ANIMATED, FORMAT, GLOBAL_OPTIONS, JOB_FIELDS, NO_STREAM, RAW, VIDEO_INPUT
from .modes import MODES, PICTURE_ORDER
from .options import Option, as_names
from .served import Served

__all__ = ["GLOBAL_OPTIONS", "VizRequest", "all_options", "fields_of", "parse_request"]

_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """Every option name with the modes that declare it and their declarations (global ones under ``""``)."""
    out: dict[str, list[tuple[str, Option]]] = {o.name: [("", o)] for o in GLOBAL_OPTIONS}
    for mode in MODES.values():
        for o in mode.options:
            out.setdefault(o.name, []).append((mode.name, o))
    return out


@dataclass(frozen=True)
class VizRequest:
    """One checked request. ``data`` is the raw input bytes (image or .npy) or ``None``; ``values[mode]`` the
    options each asked mode runs with."""

    data: bytes | None
    modes: tuple[str, ...]
    format: str
    raw: bool
    values: dict[str, dict[str, Any]]
    clip: dict[str, Any] = field(default_factory=dict)  # video models: frames, start, clip (seconds)
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)  # as they came (a job's record)
    explain: bool = False  # an /explanations call (adds gradcam)

    def wants(self, mode: str) -> bool:
        return mode in self.modes

    @property
    def picture_mode(self) -> str | None:
        return next((m for m in PICTURE_ORDER if m in self.modes), None)


def fields_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The request's fields as one dict, whatever way they came (raw body, JSON body, form fields)."""
    if "body" not in item or "data" in item:
        return dict(item)
    body = item["body"]
    if isinstance(body, (bytes, bytearray, str)):
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if raw.lstrip()[:1] not in (b"{", b"["):  # no image or .npy starts like JSON
            return {"data": raw}
        # a JSON body: TorchServe hands it over undecoded (see viz_handler), to this bounded parser
        body = parse_json(raw)
    if isinstance(body, Mapping):
        return dict(body)
    raise InvalidInput(f"request body must be an image, a .npy array or a JSON object; got JSON {type(body).__name__}")


_BASE64_TEXT = re.compile(rb"\s*(data:[\w/+.-]*;base64,)?[A-Za-z0-9+/=\s]+", re.IGNORECASE)


def _data(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value)
        # A form text field arrives as bytes too (TorchServe's decoding is off, see viz_handler): base64 text is
        # recognized by its alphabet, which no image or .npy file consists of, and by decoding.
        if _BASE64_TEXT.fullmatch(value):
            try:
                return base64.b64decode(_DATA_URL.sub("", value.decode("ascii").strip()), validate=True) or None
            except (binascii.Error, ValueError):
                pass  # not base64 after all: the bytes as they came (the decoder says what they are not)
        return value or None
    if isinstance(value, str):  # base64 text (JSON bodies, or a text form field), optionally a data: URL
        text = _DATA_URL.sub("", value.strip())
        try:
            return base64.b64decode(text, validate=True) or None
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"field 'data' is text but not valid base64: {exc}") from exc
    raise InvalidInput(f"field 'data' must be image bytes or base64 text, got {type(value).__name__}")


def _users(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def parse_request(fields: Mapping[str, Any], served: Served, *, explain: bool = False) -> VizRequest:
    """Check every field against the declarations of the modes asked and what this model allows; raise a
    :class:`cnnviz.VizError` that names the problem.

    ``explain`` (TorchServe's ``/explanations`` endpoint) adds mode ``gradcam``.
    """
    declared = all_options()
    if "stream" in fields:
        raise InvalidOption(NO_STREAM)
    if "job" in fields:
        if set(fields) not in JOB_FIELDS:
            raise InvalidOption(
                "a poll sends field 'job' alone (a cancel: 'job' and 'cancel'); this one also has "
                f"{', '.join(sorted(set(fields) - {'job', 'cancel'}))[:80]}"
            )
        raise InvalidOption("this server runs optimizations in the request (no jobs): there is no job to poll")
    if "cancel" in fields:
        raise InvalidOption("option 'cancel' ends a job: send it with field 'job' (the ID a 202 answer gave) alone")
    unknown = sorted(set(fields) - set(declared))
    if unknown:
        kserve = {"instances": "kserve", "inputs": "kservev2"}.get(unknown[0])
        if kserve:  # a KServe body on a TorchServe without the envelope that reads it
            raise InvalidOption(
                f"unknown option {unknown[0]!r}: this is the plain API; KServe {'v1' if kserve == 'kserve' else 'v2'} "
                f"bodies are read by a TorchServe started with service_envelope={kserve} (kserve/config)"
            )
        raise InvalidOption(f"unknown option {clip_text(str(unknown[0]))!r}; options: {', '.join(declared)}")
    data = _data(fields.get("data"))

    asked = (as_names("mode", fields.get("mode", "classify")) or ["classify"]) + (["gradcam"] if explain else [])
    for m in asked:
        if m not in MODES:
            raise InvalidOption(f"unknown mode {clip_text(m)!r}; modes: {', '.join(MODES)}")
    wanted = set(asked) | ({"classify"} if data is not None else set())
    modes = tuple(m for m in MODES if m in wanted)
    if data is None:
        need = [m for m in modes if MODES[m].needs_input]
        if need:
            free = ", ".join(m for m in MODES if not MODES[m].needs_input)
            raise InvalidInput(
                f"mode {need[0]} needs an image: send it as the request body, as form field 'data', or as base64 "
                f"in a JSON body's 'data' (modes without an image: {free})"
            )

    fmt = FORMAT.parse(fields.get("format", FORMAT.default))
    raw = RAW.parse(fields.get("raw", RAW.default))
    clip: dict[str, Any] = {}
    if served.spec.modality == "video":
        clip = {o.name: o.parse(fields[o.name]) if o.name in fields else o.default_for(served) for o in VIDEO_INPUT}
    elif any(o.name in fields for o in VIDEO_INPUT):
        raise InvalidOption(f"options 'frames', 'start' and 'clip' sample a video; {served.spec.arch} takes images")
    for name, users in declared.items():
        modes_of = [m for m, _ in users if m]
        if name in fields and modes_of and not set(modes_of) & wanted:
            raise InvalidOption(f"option {name!r} is used by mode {_users(modes_of)}; add it to mode")

    if "method" in fields:  # one option, several modes: each takes the methods it has
        claimed = {n: m for m in modes for n in MODES[m].claims.get("method", ())}
        for n in as_names("method", fields["method"]):
            if n not in claimed:
                users = [m for m in modes if MODES[m].claims.get("method")]
                allowed = [n for m in users for n in MODES[m].claims["method"]]
                raise InvalidOption(f"unknown method {clip_text(n)!r} for mode {', '.join(users)}; methods: "
                                    f"{', '.join(allowed)}")  # fmt: skip

    values: dict[str, dict[str, Any]] = {}
    for m in modes:
        mode = MODES[m]
        v = {o.name: o.parse(fields[o.name]) if o.name in fields else o.default_for(served) for o in mode.options}
        v["raw"] = raw
        v["animation"] = fmt if fmt in ANIMATION_FORMATS else "webp"
        values[m] = mode.finish(v, served, fields)

    request = VizRequest(data, modes, fmt, raw, values, clip, dict(fields), explain)
    if fmt == "png" and request.picture_mode is None:
        raise InvalidOption(f"format=png returns a picture: add one of the modes {', '.join(PICTURE_ORDER)}")
    if fmt in ANIMATION_FORMATS:
        animated = [m for m in ANIMATED if m in modes]
        if served.spec.modality != "video" or not animated:
            raise InvalidOption(f"format={fmt} answers with an animation: the clips of a video model's "
                                f"{', '.join(ANIMATED)}")  # fmt: skip
    return request
