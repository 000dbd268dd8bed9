"""KServe's v1 and v2 (Open Inference) protocols, as TorchServe's request envelopes hand them to a handler.

KServe's TorchServe runtime starts TorchServe with ``service_envelope=kserve`` for ``protocolVersion: v1`` and
``kservev2`` for v2. TorchServe's envelope (``ts/torch_handler/request_envelope/kserve.py``, ``kservev2.py``) then
sits between the worker and the handler, for every request:

* v1: it reads the first request of the batch as JSON and hands the handler ``body["instances"]``; the handler's
  list of answers comes back as ``{"predictions": [...]}`` (``{"explanations": [...]}`` for ``/explanations``).
* v2: it hands the handler ``body["inputs"]``, each input with ``data`` replaced by its first element for BYTES (and
  reshaped to ``shape`` otherwise), drops the request's ``parameters``, records the input names on the context
  (``context.input_names``), and wraps answer ``i`` as output ``i`` named ``input_names[i]``, in
  ``{"id", "model_name", "model_version", "outputs"}``.

What this service reads (docs/deploying.md's "KServe" section shows the bodies):

* v1: each instance is one request of the plain API: base64 image text, or an object with the image as ``data``
  (or ``b64``, or TF Serving's ``{"b64": ...}``) and any option of the plain API beside it
  (``{"data": "...", "mode": "gradcam", "topk": 3}``); each prediction is exactly the JSON answer of the plain API.
* v2: each BYTES input holding one base64 image is one request; its options are the input's ``parameters``, over
  inputs named after an option (``{"name": "mode", "datatype": "BYTES", "shape": [1], "data": ["gradcam"]}``, or a
  one-value number input like ``topk``), over the request's ``parameters``; they apply to every image input. Each
  image input's output (same name, BYTES, shape [1]) holds the plain API's JSON answer as text.

Errors: a request with a bad instance answers that instance's status (the first such). v1 answers it with every
instance's answer or error object, ``{"predictions": [...]}``, so the bad image is found; v2 answers in the Open
Inference Protocol's error form, ``{"error": "<message>"}`` with the plain API's message (prefixed by the input's
name where there are several images), which OIP clients (``tritonclient``) raise as their own exception.

The binary tensor extension's parameters (the request's ``binary_data_output``, an input's ``binary_data`` and
``binary_data_size``) belong to the protocol, not to this service: they are never read as options. KServe's model
server (``kserve/front.py``) decodes binary inputs and encodes binary outputs; TorchServe hands this module JSON.

Answers are JSON only (``format`` other than json is refused: a bare PNG has no place in either protocol), and
optimizations (actmax, invert) and job polls are refused: they run as jobs polled on the worker that holds them,
and behind KServe's load balancing a poll may reach another replica.

Bounds: the body is parsed by :func:`vizserve.decode.parse_json` (depth and size bounded; TorchServe's envelope
would ``json.loads`` it unbounded), at most ``Limits.max_instances`` instances (image inputs), each base64 image at
most ``Limits.max_instance_bytes`` decoded, and the answers together at most ``Limits.max_response_bytes``.

This module never imports TorchServe; ``viz_handler.py`` puts :func:`check_body` in front of TorchServe's envelopes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnviz import InputTooLarge, InvalidInput, InvalidOption, VizError, clip_text

from .decode import parse_json
from .modes import MODES, OptimizeMode
from .options import as_names, as_text
from .reply import Reply
from .request import all_options

__all__ = ["ENVELOPES", "Answer", "Call", "answer", "check_body"]

log = logging.getLogger(__name__)

#: TorchServe's ``service_envelope`` names and the KServe protocol each speaks.
ENVELOPES = {"kserve": "v1", "kservev2": "v2"}
#: What TorchServe's kservev2 envelope knows (``_DatatypeToNumpy``); any other datatype would fail inside it.
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                "FP64", "BYTES")  # fmt: skip
MAX_V2_INPUTS = 64  # images and option inputs together
#: The binary tensor extension's own parameters (KServe's and Triton's name for it: binary_data), request and input
#: level: what the front uses to frame tensors, never an option of this service.
V2_REQUEST_PROTOCOL_PARAMETERS = frozenset({"binary_data_output"})
V2_INPUT_PROTOCOL_PARAMETERS = frozenset({"binary_data", "binary_data_size"})
MAX_NAME = 128
MAX_RANK = 8
OPTIMIZATIONS = tuple(name for name, mode in MODES.items() if isinstance(mode, OptimizeMode))
NO_JOBS = (
    f"{' and '.join(OPTIMIZATIONS)} run as jobs, polled with 'job' on the worker that holds them; behind KServe "
    "(service_envelope) a poll may reach another replica, so optimizations and polls are served only by the plain "
    "API of a TorchServe without an envelope (serve.sh, Docker)"
)
NO_FORMAT = (
    "through KServe every answer is JSON, with pictures as base64 PNG inside it; format={} answers with a bare "
    "picture, which neither KServe protocol carries: leave 'format' out"
)
V1_SHAPE = '{"instances": [{"data": "<base64 image>", "mode": "...", ...}, ...]}'
V2_SHAPE = '{"inputs": [{"name": "data", "shape": [1], "datatype": "BYTES", "data": ["<base64 image>"]}]}'


@dataclass
class Call:
    """One request through an envelope, as :func:`check_body` found it: its protocol, the error that makes the
    whole request unreadable (or ``None``), and the v2 request's ``parameters`` (which the envelope drops)."""

    protocol: str
    error: VizError | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """What the handler returns through the envelope: the request's status, one entry per instance (v1: JSON
    objects; v2: JSON text), the v2 output names, each instance's modes and status (for metrics), and for a v2
    request whose status is not 200 the message of the protocol's error form (``{"error": error}``, which replaces
    the outputs; ``None`` otherwise)."""

    status: int
    entries: list[Any]
    names: list[str]
    modes: list[tuple[str, ...]]
    statuses: list[int]
    error: str | None = None


# -- the body, before TorchServe's envelope reads it ---------------------------------------------------------------


def _body(rows: Sequence[Any], protocol: str) -> dict[str, Any]:
    shape = V1_SHAPE if protocol == "v1" else V2_SHAPE
    row = rows[0] if rows else None
    body = (row.get("data") or row.get("body")) if isinstance(row, Mapping) else None
    if isinstance(body, (bytes, bytearray, str)):
        raw = body.encode() if isinstance(body, str) else bytes(body)
        if raw.lstrip()[:1] != b"{":
            raise InvalidInput(
                f"this server speaks KServe {protocol} (TorchServe's service_envelope): the body is a JSON object "
                f"{shape}, with images as base64 text; this one is not JSON"
            )
        body = parse_json(raw)
    if not isinstance(body, Mapping):
        raise InvalidInput(f"a KServe {protocol} request is a JSON object {shape}; got {type(body).__name__}")
    return dict(body)


def _check_v1(body: dict[str, Any]) -> None:
    if "instances" not in body:
        hint = (
            "; 'inputs' is KServe v2, which this server speaks only with service_envelope=kservev2"
            if "inputs" in body
            else "; the plain API's fields go inside each instance"
        )
        raise InvalidInput(f"a KServe v1 request is {V1_SHAPE}; this one has no 'instances'{hint}")
    extra = sorted(set(body) - {"instances"})
    if extra:
        raise InvalidInput(
            f"a KServe v1 request carries only 'instances' (options go inside each instance); this one also has "
            f"{clip_text(', '.join(map(str, extra)))}"
        )
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f"'instances' must be a non-empty list: {V1_SHAPE}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(shape: list[int], count: int) -> bool:
    """Whether ``count`` values reshape to ``shape`` (numpy's rule: at most one -1, the rest non-negative)."""
    free = [s for s in shape if s == -1]
    if len(free) > 1 or any(s < -1 for s in shape):
        return False
    known = 1
    for s in shape:
        known *= s if s != -1 else 1
    return known == count if not free else known > 0 and count % known == 0


def _check_v2_input(k: int, inp: Any) -> str:
    if not isinstance(inp, Mapping):
        raise InvalidInput(f"input {k} must be an object like {V2_SHAPE[12:-2]}; got {type(inp).__name__}")
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in inp]
    if missing:
        raise InvalidInput(f"input {k} has no {', '.join(repr(m) for m in missing)}: each input is {V2_SHAPE[12:-2]}")
    name, shape, datatype, data = inp["name"], inp["shape"], inp["datatype"], inp["data"]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidInput(f"input {k}: 'name' must be text of 1..{MAX_NAME} characters")
    label = f"input {clip_text(name, 40)!r}"
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(s) for s in shape):
        raise InvalidInput(f"{label}: 'shape' must be a list of at most {MAX_RANK} whole numbers, like [1]")
    if datatype not in V2_DATATYPES:
        raise InvalidInput(
            f"{label}: datatype {clip_text(str(datatype), 20)!r} is not a KServe v2 datatype; images come as BYTES "
            f"(base64 text), option values as BYTES text or a one-value number"
        )
    if not isinstance(data, list) or len(data) != 1:
        count = len(data) if isinstance(data, list) else type(data).__name__
        raise InvalidInput(
            f"{label}: 'data' must be a list of exactly one value (one image per input: send more images as more "
            f"inputs); it holds {count}"
        )
    value = data[0]
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise InvalidInput(f"{label}: a BYTES value must be text (an image as base64); got {type(value).__name__}")
    elif isinstance(value, (list, dict, str)) or value is None or not _fits(shape, 1):
        raise InvalidInput(
            f"{label}: a {datatype} input is read as one option value (shape [1], data [value]); images come as "
            f"BYTES base64 text, not as tensors"
        )
    if "parameters" in inp and not isinstance(inp["parameters"], Mapping):
        raise InvalidInput(f"{label}: 'parameters' must be an object of option names and values")
    return name


def _check_v2(body: dict[str, Any]) -> dict[str, Any]:
    if "inputs" not in body:
        hint = (
            "; 'instances' is KServe v1, which this server speaks only with service_envelope=kserve"
            if "instances" in body
            else ""
        )
        raise InvalidInput(f"a KServe v2 request is {V2_SHAPE}; this one has no 'inputs'{hint}")
    # KServe's model server adds model_name when it passes a request on (InferRequest.to_rest); outputs are named
    # after the image inputs whatever 'outputs' asks for
    extra = sorted(set(body) - {"id", "inputs", "outputs", "parameters", "model_name", "model_version"})
    if extra:
        raise InvalidInput(
            f"a KServe v2 request has 'inputs' and optionally 'id', 'parameters' and 'outputs'; this one also has "
            f"{clip_text(', '.join(map(str, extra)))}"
        )
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidInput("a KServe v2 request's 'id' must be text")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise InvalidInput("a KServe v2 request's 'parameters' must be an object of option names and values")
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"'inputs' must be a non-empty list: {V2_SHAPE}")
    if len(inputs) > MAX_V2_INPUTS:
        raise InputTooLarge(f"a request has at most {MAX_V2_INPUTS} inputs (images and options); this one has "
                            f"{len(inputs)}")  # fmt: skip
    names = [_check_v2_input(k, inp) for k, inp in enumerate(inputs)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"input names must differ; {clip_text(', '.join(twice))} is given more than once")
    return {k: v for k, v in parameters.items() if k not in V2_REQUEST_PROTOCOL_PARAMETERS}


def check_body(protocol: str, rows: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first request of a batch, read as TorchServe's envelope for ``protocol`` will read it, and checked so
    that the envelope cannot fail on it: ``(body, v2 request parameters)``. Raises :class:`cnnviz.VizError` (400,
    413) that says what a request of that protocol looks like."""
    body = _body(rows, protocol)
    if protocol == "v1":
        _check_v1(body)
        return body, {}
    return body, _check_v2(body)


# -- instances and inputs as the plain API's fields ----------------------------------------------------------------


def _checked(fields: dict[str, Any], limits, jobs: bool = False) -> dict[str, Any]:
    """The fields of one instance, refused here when the envelope cannot carry their answer (``jobs``: the
    server shares its jobs with every replica, so optimizations and polls are answered here too)."""
    if "job" in fields and not jobs:
        raise InvalidOption(NO_JOBS)
    asked = as_names("mode", fields.get("mode", ""))
    if any(m in OPTIMIZATIONS for m in asked) and not jobs:
        raise InvalidOption(f"mode {next(m for m in asked if m in OPTIMIZATIONS)}: {NO_JOBS}")
    if "format" in fields and as_text("format", fields["format"]).lower() != "json":
        raise InvalidOption(NO_FORMAT.format(clip_text(as_text("format", fields["format"]), 20)))
    data = fields.get("data")
    if isinstance(data, str) and len(data) > (limits.max_instance_bytes * 4 + 2) // 3 + 64:
        raise InputTooLarge(
            f"an image is {len(data) * 3 / 4 / 2**20:.1f} MiB as base64; this server reads at most "
            f"{limits.max_instance_bytes / 2**20:.1f} MiB an image (max_instance_bytes)"
        )
    return fields


def _v1_fields(instance: Any, limits, jobs: bool = False) -> dict[str, Any]:
    if isinstance(instance, str):
        return _checked({"data": instance}, limits, jobs)
    if not isinstance(instance, Mapping):
        raise InvalidInput(
            f"an instance is base64 image text or an object with the image as 'data' and options beside it; got "
            f"{type(instance).__name__}"
        )
    fields = dict(instance)
    if "b64" in fields:
        if "data" in fields:
            raise InvalidInput("an instance has its image as 'data' or as 'b64', not both")
        fields["data"] = fields.pop("b64")
    if isinstance(fields.get("data"), Mapping):  # TF Serving's binary convention: {"b64": "..."}
        inner = fields["data"]
        if set(inner) != {"b64"}:
            raise InvalidInput("an instance's 'data' is base64 text, or an object {'b64': '<base64>'}")
        fields["data"] = inner["b64"]
    if "data" in fields and not isinstance(fields["data"], str):
        raise InvalidInput(f"an instance's 'data' is base64 text; got {type(fields['data']).__name__}")
    return _checked(fields, limits, jobs)


def _at_most(count: int, what: str, limits) -> None:
    """One request's instances (v1) or images (v2) within ``limits.max_instances``."""
    if count > limits.max_instances:
        raise InputTooLarge(
            f"a request has at most {limits.max_instances} {what} (max_instances); this one has {count}: send them "
            f"in several requests"
        )


def v1_items(instances: Any, limits, jobs: bool = False) -> tuple[list[dict[str, Any] | VizError], list[str]]:
    """Each instance as the fields of one plain request, or the error that refuses it."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f"'instances' must be a non-empty list: {V1_SHAPE}")
    _at_most(len(instances), "instances", limits)
    items: list[dict[str, Any] | VizError] = []
    for instance in instances:
        try:
            items.append(_v1_fields(instance, limits, jobs))
        except VizError as err:
            items.append(err)
    return items, []


def v2_items(
    inputs: Any, parameters: Mapping[str, Any], limits, jobs: bool = False
) -> tuple[list[dict[str, Any] | VizError], list[str]]:
    """Each image input as the fields of one plain request (or the error that refuses it), and the output names:
    the image inputs' own. Inputs named after an option (other than ``data``) are options of every image."""
    option_names = set(all_options()) - {"data"}
    options = dict(parameters)
    images = []
    for inp in inputs:
        if inp["name"] in option_names:
            value = inp["data"]
            while isinstance(value, list) and len(value) == 1:  # a number input, reshaped by the envelope
                value = value[0]
            options[inp["name"]] = value
        else:
            images.append(inp)
    if not images and jobs and "job" in options:  # a poll or a cancel: its options are the request
        return [_checked(options, limits, jobs)], ["job"]
    if not images:
        raise InvalidInput(
            f"no image input: every input is named after an option ({', '.join(i['name'] for i in inputs)[:80]}); "
            f"the image is a BYTES input of any other name, like {V2_SHAPE[12:-2]}"
        )
    _at_most(len(images), "images", limits)
    items: list[dict[str, Any] | VizError] = []
    for inp in images:
        own = {k: v for k, v in (inp.get("parameters") or {}).items() if k not in V2_INPUT_PROTOCOL_PARAMETERS}
        if inp["datatype"] != "BYTES":
            items.append(InvalidInput(f"input {clip_text(inp['name'], 40)!r} is {inp['datatype']}: an image comes "
                                      f"as BYTES, base64 text"))  # fmt: skip
        elif "data" in own:
            items.append(InvalidInput(f"input {clip_text(inp['name'], 40)!r}: the image is the input's data; "
                                      f"'data' is no parameter"))  # fmt: skip
        else:
            try:
                items.append(_checked({**options, **own, "data": inp["data"]}, limits, jobs))
            except VizError as err:
                items.append(err)
    return items, [inp["name"] for inp in images]


# -- the answer ----------------------------------------------------------------------------------------------------


def answer(service, call: Call, data: Any, explain: bool = False) -> Answer:
    """Answer one request that came through an envelope: every instance through ``service.handle`` at once (one
    batch), each answer as the envelope will carry it. Never raises for a bad request."""
    v2 = call.protocol == "v2"

    def whole(err: VizError) -> Answer:
        body = err.as_dict()
        entry, error = (json.dumps(body), err.message) if v2 else (body, None)
        return Answer(err.status, [entry], ["error"], [()], [err.status], error)

    if call.error is not None:
        return whole(call.error)
    limits = service.limits
    # with a job store that every replica shares, a job submitted here can be polled through any replica
    jobs = service.jobs is not None and service.jobs.store.shared
    try:
        items, names = v2_items(data, call.parameters, limits, jobs) if v2 else v1_items(data, limits, jobs)
    except VizError as err:
        return whole(err)
    asked = [k for k, item in enumerate(items) if not isinstance(item, VizError)]
    replies: list[Reply | None] = [None] * len(items)
    # each instance as a JSON body of the plain API ({"body": fields}: its keys are read as options, nothing else)
    done = service.handle([{"body": items[k]} for k in asked], [explain] * len(asked), jobs=jobs)
    for k, reply in zip(asked, done, strict=True):
        replies[k] = reply
    entries: list[Any] = []
    statuses: list[int] = []
    modes: list[tuple[str, ...]] = []
    for item, reply in zip(items, replies, strict=True):
        if reply is None:
            entries.append(json.dumps(item.as_dict()) if v2 else item.as_dict())
            statuses.append(item.status)
            modes.append(())
            continue
        statuses.append(reply.status)
        modes.append(reply.modes)
        if not reply.content_type.startswith("application/json"):  # the format check makes every answer JSON
            log.error("a %s answer through the envelope, not JSON", reply.content_type)
            reply = Reply.internal_error()
            statuses[-1] = reply.status
        entries.append(reply.body.decode("utf-8") if v2 else reply.jsonable())  # v1 carries JSON values, v2 text
    # the envelope's wrapping adds little to v1; v2 carries each answer as a JSON string, each quote escaped
    size = sum(len(r.body) + r.body.count(b'"') if v2 else r.size for r in replies if r is not None)
    if size > limits.max_response_bytes:
        return whole(
            InputTooLarge(
                f"the answers would be {size / 2**20:.1f} MiB together, over this server's limit of "
                f"{limits.max_response_bytes / 2**20:.1f} MiB (max_response_size); send fewer instances a request"
            )
        )
    status = next((s for s in statuses if s >= 300), 200)
    error = None
    if v2 and status >= 300:  # the first refused image's message, named when there are several
        k = next(k for k, s in enumerate(statuses) if s >= 300)
        message = str(json.loads(entries[k]).get("message", ""))
        error = f"input {clip_text(names[k], 40)!r}: {message}" if len(names) > 1 else message
    return Answer(status, entries, names, modes, statuses, error)
