"""TorchServe handler: thin glue between TorchServe's worker and :class:`vizserve.VizService`.

Everything else (request parsing, the model, pictures) lives in the server-independent packages ``cnnviz`` and
``vizserve``, which the archive carries beside this file. TorchServe wants exactly one class in this module.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from vizserve import load_service

log = logging.getLogger(__name__)


def select_device(gpu_id) -> torch.device:
    """The GPU TorchServe assigned to this worker when CUDA is available, else the CPU (never a fixed cuda:0)."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def _record_metrics(context, replies, batch_ms: float) -> None:
    """Per-mode request counts (with the status) and latencies as TorchServe custom metrics; with
    ``metrics_mode=prometheus`` and ``model_metrics_auto_detect=true`` they appear on the metrics endpoint as
    ``VizRequests`` and ``VizLatency``. A request's latency is its batch's handler time."""
    try:
        from ts.metrics.dimension import Dimension
        from ts.metrics.metric_type_enum import MetricTypes

        metrics = context.metrics
    except (ImportError, AttributeError):  # not inside a TorchServe worker
        return
    if metrics is None:
        return
    for idx, reply in enumerate(replies):
        request_id = context.get_request_id(idx)
        for mode in reply.modes or ("unreadable",):
            status = Dimension("Status", str(reply.status))
            metrics.add_counter("VizRequests", 1, request_id, [Dimension("Mode", mode), status])
            metrics.add_time("VizLatency", batch_ms, request_id, "ms", [Dimension("Mode", mode)], MetricTypes.GAUGE)


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
        cfg = (context.model_yaml_config or {}).get("handler", {})
        # optimizations run as jobs on a thread of this worker, beside the request path (vizserve.jobs)
        self.service = load_service(props["model_dir"], cfg, device=device, name=context.model_name, jobs=True)
        log.info("loaded %s (%s, weights %s) on %s", context.model_name, cfg.get("arch"), cfg.get("weights"), device)
        self.initialized = True

    def handle(self, data, context):
        started = time.perf_counter()
        data = data or []
        # TorchServe's /explanations/{model} (and KServe's :explain) mark each request with this header.
        explain = [str(context.get_request_header(i, "explain")).lower() == "true" for i in range(len(data))]
        replies = self.service.handle(data, explain)
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, reply.phrase, idx)
            context.set_response_content_type(idx, reply.content_type)
            for key, value in reply.headers:
                context.set_response_header(idx, key, value)
        _record_metrics(context, replies, (time.perf_counter() - started) * 1000)
        return [reply.body for reply in replies]
