"""TorchServe handler: thin glue between TorchServe's worker and :class:`vizserve.VizService`.

Everything else (request parsing, the model, pictures) lives in the server-independent packages ``cnnviz`` and
``vizserve``, which the archive carries beside this file. TorchServe wants exactly one class in this module.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus

import torch

from cnnviz import InvalidInput, VizError, clip_text
from vizserve import kserve, load_service

log = logging.getLogger(__name__)


def select_device(gpu_id) -> torch.device:
    """The GPU TorchServe assigned to this worker when CUDA is available, else the CPU (never a fixed cuda:0)."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def _record_metrics(context, answered, batch_ms: float) -> None:
    """Per-mode request counts (with the status) and latencies as TorchServe custom metrics; with
    ``metrics_mode=prometheus`` and ``model_metrics_auto_detect=true`` they appear on the metrics endpoint as
    ``VizRequests`` and ``VizLatency``. A request's latency is its batch's handler time. ``answered``: one
    ``(request index, modes, status)`` a request (an instance, through KServe's envelopes)."""
    try:
        from ts.metrics.dimension import Dimension
        from ts.metrics.metric_type_enum import MetricTypes

        metrics = context.metrics
    except (ImportError, AttributeError):  # not inside a TorchServe worker
        return
    if metrics is None:
        return
    for idx, modes, code in answered:
        request_id = context.get_request_id(idx)
        for mode in modes or ("unreadable",):
            status = Dimension("Status", str(code))
            metrics.add_counter("VizRequests", 1, request_id, [Dimension("Mode", mode), status])
            metrics.add_time("VizLatency", batch_ms, request_id, "ms", [Dimension("Mode", mode)], MetricTypes.GAUGE)


def _guarded(original, protocol: str):
    def parse_input(self, data):
        """vizserve.kserve.check_body first (bounded, never raising but with a 400 or 413 for the handler to
        answer), then TorchServe's own parse_input on the parsed body."""
        if data and len(data) > 1:
            log.error(
                "TorchServe's KServe envelopes read only the first request of a batch and answer one: the other %d "
                "fail; this model needs batchSize 1 (kserve/config/config.properties)",
                len(data) - 1,
            )
        try:
            body, parameters = kserve.check_body(protocol, data)
        except VizError as err:
            self.context.viz_kserve = kserve.Call(protocol, error=err)
            return [None]
        try:
            parsed = original(self, [{"body": body}])
        except Exception as exc:  # check_body missed a shape the envelope cannot read: still the request's fault
            log.exception("TorchServe's %s envelope failed on a checked body", protocol)
            err = InvalidInput(f"TorchServe's KServe {protocol} envelope could not read this request: "
                               f"{clip_text(str(exc))}")  # fmt: skip
            self.context.viz_kserve = kserve.Call(protocol, error=err)
            return [None]
        self.context.viz_kserve = kserve.Call(protocol, parameters=parameters)
        return parsed

    parse_input.viz_guarded = True
    return parse_input


def _oip_errors(original):
    def format_output(self, data):
        """A refused v2 request in the Open Inference Protocol's error form, ``[{"error": message}]`` (the worker
        sends it with the status the handler set), instead of outputs; else TorchServe's own format_output."""
        error = vars(self.context).pop("viz_kserve_error", None)
        if error is None:
            return original(self, data)
        for name in ("input_names", "input_request_id"):  # what format_output would have consumed
            vars(self.context).pop(name, None)
        return [{"error": error}]

    format_output.viz_guarded = True
    return format_output


def guard_kserve_envelopes() -> None:
    """Put :func:`vizserve.kserve.check_body` in front of TorchServe's KServe envelopes (``service_envelope=kserve``
    or ``kservev2``, as KServe's TorchServe runtime sets it). Theirs ``json.loads`` the body without bounds and raise
    on anything malformed (a body that is not JSON, no ``instances``, a v2 input without ``datatype``), which
    TorchServe answers 503 for the whole batch; guarded, such a request reaches the handler marked as unreadable
    and is answered 400 like any bad request. A refused v2 request is answered in the Open Inference Protocol's
    error form (status and ``{"error": message}``) rather than as outputs. Class attributes, so the envelope
    TorchServe already made (before ``initialize``) is guarded too; a second call changes nothing."""
    try:
        from ts.torch_handler.request_envelope.kserve import KServeEnvelope
        from ts.torch_handler.request_envelope.kservev2 import KServev2Envelope
    except ImportError:  # not inside TorchServe
        return
    for cls, name in ((KServeEnvelope, "kserve"), (KServev2Envelope, "kservev2")):
        if not vars(cls.parse_input).get("viz_guarded", False):  # guarded once per worker
            cls.parse_input = _guarded(cls.parse_input, kserve.ENVELOPES[name])
    if not vars(KServev2Envelope.format_output).get("viz_guarded", False):
        KServev2Envelope.format_output = _oip_errors(KServev2Envelope.format_output)


class VizHandler:
    """Serves classification, feature maps, filters and the layer table for one model archive."""

    def __init__(self) -> None:
        self.service = None
        self.initialized = False

    def initialize(self, context) -> None:
        # TorchServe's worker would json.loads every application/json body before the handler, without bounds on
        # depth or size; undecoded, it reaches vizserve's bounded parser instead (read per request by the worker).
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        props = context.system_properties
        device = select_device(props.get("gpu_id"))
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this worker's current device: what uses one lands on its own GPU
        cfg = (context.model_yaml_config or {}).get("handler", {})
        # optimizations run as jobs on a thread of this worker, beside the request path (vizserve.jobs)
        self.service = load_service(props["model_dir"], cfg, device=device, name=context.model_name, jobs=True)
        guard_kserve_envelopes()
        log.info("loaded %s (%s, weights %s) on %s", context.model_name, cfg.get("arch"), cfg.get("weights"), device)
        self.initialized = True

    def handle(self, data, context):
        started = time.perf_counter()
        call = vars(context).get("viz_kserve")  # set by the guarded KServe envelope, for this request only
        if call is not None:
            context.viz_kserve = None
            return self._handle_kserve(call, data, context, started)
        data = data or []
        # TorchServe's /explanations/{model} (and KServe's :explain) mark each request with this header.
        explain = [str(context.get_request_header(i, "explain")).lower() == "true" for i in range(len(data))]
        replies = self.service.handle(data, explain)
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, reply.phrase, idx)
            context.set_response_content_type(idx, reply.content_type)
            for key, value in reply.headers:
                context.set_response_header(idx, key, value)
        answered = [(idx, reply.modes, reply.status) for idx, reply in enumerate(replies)]
        _record_metrics(context, answered, (time.perf_counter() - started) * 1000)
        return [reply.body for reply in replies]

    def _handle_kserve(self, call, data, context, started: float) -> list:
        """One request through TorchServe's KServe envelope (request 0 of the batch; the envelope reads no other):
        its instances answered as one batch, the envelope wrapping the list as ``predictions`` or v2 ``outputs``."""
        explain = str(context.get_request_header(0, "explain")).lower() == "true"
        out = kserve.answer(self.service, call, data, explain)
        context.set_response_status(out.status, HTTPStatus(out.status).phrase, 0)
        context.set_response_content_type(0, "application/json")
        if call.protocol == "v2":
            context.input_names = out.names  # the envelope names output i after input_names[i]: the image inputs
            if out.error is not None:
                context.viz_kserve_error = out.error  # answered as {"error": ...} by the guarded format_output
        answered = [(0, modes, code) for modes, code in zip(out.modes, out.statuses, strict=True)]
        _record_metrics(context, answered, (time.perf_counter() - started) * 1000)
        return out.entries
