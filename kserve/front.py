"""KServe's own model server (PyPI ``kserve``, pinned in requirements-kserve.txt) in front of TorchServe in a KServe
predictor pod: what Open Inference Protocol clients (``tritonclient[http]``, KServe's ``InferenceRESTClient``) talk
to. Run it after ``torchserve --start``, as KServe's TorchServe runtime image runs its own wrapper:

    python kserve/front.py [KServe's model server flags, e.g. --http_port 8080]

Why a front, and why this one: in KServe's TorchServe runtime, clients never reach TorchServe. The runtime image
(pytorch/torchserve-kfs) starts TorchServe, then KServe's model server on :8080, which serves ``/v2/health/*`` and
``/v2/models/{name}[/ready]`` itself and passes each infer request on to TorchServe's ``/v2/models/{name}/infer``
(the kservev2 envelope, then ``viz_handler``). TorchServe 0.12's REST API serves neither the model ready nor the
model metadata endpoint, and reads JSON only. The model server decodes the binary tensor extension
(``Inference-Header-Content-Length``, an input's ``binary_data_size``) into JSON before any model code, and encodes
binary outputs on the way back, from KServe 0.14 on: the runtime images' own (0.11 in torchserve-kfs:0.9.0, which
KServe's ClusterServingRuntime names; 0.13 in torchserve-kfs:0.12.0) predate it, so binary requests need this front
in the image. What is ours here is the glue that pytorch/serve's ``kserve_wrapper`` holds for the stock image,
written for the pinned KServe:

* one :class:`TorchServeModel` for each model of ``model_snapshot`` in TorchServe's config.properties
  (``CONFIG_PATH``, default ``/mnt/models/config/config.properties``, as the wrapper reads it), forwarding to its
  ``inference_address`` with the protocol KServe's controller sets in ``PROTOCOL_VERSION`` (``v1`` or ``v2``);
* ready: the server starts listening once every model has a READY worker on TorchServe's management API (at most
  ``VIZ_FRONT_READY_S`` seconds, default 600), and ``/v2/models/{name}/ready`` asks that API again (at most once a
  second), so a model whose worker died is not ready;
* metadata: ``/v2/models/{name}`` names one image input and its output, both BYTES of shape [1] (an image is base64
  text, its answer the plain API's JSON text); options travel as the request's ``parameters``, the input's
  ``parameters`` or inputs named after them (README, KServe);
* binary outputs: the answer is encoded as the request asked (``binary_data_output``, or an output's
  ``binary_data``), which KServe's model server does not carry over from request to response by itself;
* errors: TorchServe's status and message come back in the protocol's form, ``{"error": "<message>"}`` (KServe's
  model server would answer every one of them 500 with its own prefix); a TorchServe that does not answer is a 503;
* bounds: a request body over TorchServe's ``max_request_size`` is refused (413) before KServe's model server reads
  it: uvicorn and KServe's model server set no limit of their own;
* a v2 request all in JSON without a JSON Content-Type (tritonclient's, with ``binary_data=False``) is read as JSON,
  as the binary extension says, where KServe's model server alone refuses it (400, no header).

What KServe's model server does not carry: a BYTES element that is not UTF-8 text (raw image bytes), which its REST
path turns into JSON text before any model code runs (answered 400 with that reason, not KServe's 500 that quotes
the whole element); images go as base64 text, in binary or in JSON. Not served
here: ``grpc-v2`` (the model server's gRPC port is off; TorchServe's own gRPC API is another protocol) and KServe's
v1 ``:explain`` (this model server's explain route does not reach TorchServe's).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.responses import JSONResponse
from kserve import Model, ModelServer
from kserve.model_server import app
from kserve.predictor_config import PredictorConfig
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.rest import server as rest_server

log = logging.getLogger("cnn_viz_front")

DEFAULT_CONFIG = "/mnt/models/config/config.properties"
PROTOCOLS = ("v1", "v2")
MAX_MESSAGE = 2000  # characters of a TorchServe error passed on
JSON_LENGTH = b"inference-header-content-length"  # the binary extension's header, as ASGI spells header names
#: Metadata of every model: the image input and the output that answers it (any other input name works too).
IMAGE_TENSOR = {"name": "image", "datatype": "BYTES", "shape": [1]}


class TorchServeError(Exception):
    """An answer of TorchServe's other than 2xx, or none: its status and the message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def torchserve_error(_request, exc: TorchServeError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"error": exc.message})


NOT_TEXT = (
    "a BYTES element that is not UTF-8 text (raw image bytes?) cannot pass KServe's model server, which turns BYTES "
    "into JSON text before any model code: send the image as base64 text, in binary or in JSON"
)


async def inference_error(_request, exc: Exception) -> JSONResponse:
    """KServe's own handler answers 500 with the message, which for a BYTES element that is not UTF-8 holds the
    whole element's repr (megabytes for an image): here that is the client's 400 with the way out, and any other
    message is cut to ``MAX_MESSAGE`` characters."""
    message = str(exc)
    if message.startswith("Failed to encode") and "UTF-8" in message:
        return JSONResponse(status_code=400, content={"error": NOT_TEXT})
    log.error("inference error: %s", message[:MAX_MESSAGE])
    return JSONResponse(status_code=500, content={"error": message[:MAX_MESSAGE]})


def error_message(response: httpx.Response) -> str:
    """TorchServe's message in an answer other than 2xx: ``error`` (the handler's v2 form), ``message`` (the plain
    API's and TorchServe's own error objects), v1's first error object among ``predictions``, else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_MESSAGE] or f"TorchServe answered {response.status_code} without a message"
    if isinstance(body, dict):
        predictions = body.get("predictions")
        if isinstance(predictions, list):  # v1: every instance's answer; the first error object says what failed
            body = next((p for p in predictions if isinstance(p, dict) and "message" in p and "code" in p), body)
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return body[key][:MAX_MESSAGE]
    return json.dumps(body)[:MAX_MESSAGE]


class TorchServeModel(Model):
    """One model served by the TorchServe beside this front: inference through KServe's own client (``predict``),
    readiness from TorchServe's management API, errors as :class:`TorchServeError`."""

    def __init__(self, name: str, management: str, ready_s: float) -> None:
        super().__init__(name)
        self.management = management.rstrip("/")
        self.ready_s = ready_s
        self._checked = (0.0, False)  # (when, ready) of the last look at TorchServe

    def _workers_ready(self, described: Any) -> bool:
        return bool(described) and any(w.get("status") == "READY" for w in described[0].get("workers", []))

    def load(self) -> bool:
        """Wait (at most ``ready_s``) until TorchServe has a READY worker for this model."""
        deadline = time.monotonic() + self.ready_s
        while True:
            try:
                r = httpx.get(f"{self.management}/models/{self.name}", timeout=5)
                self.ready = r.is_success and self._workers_ready(r.json())
            except (httpx.HTTPError, ValueError, AttributeError, IndexError):
                self.ready = False
            if self.ready or time.monotonic() > deadline:
                break
            time.sleep(2)
        log.info("%s: %s", self.name, "ready" if self.ready else f"no READY worker after {self.ready_s:.0f} s")
        return self.ready

    async def healthy(self) -> bool:
        when, ready = self._checked
        if time.monotonic() - when < 1.0:
            return ready
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"{self.management}/models/{self.name}")
            ready = r.is_success and self._workers_ready(r.json())
        except (httpx.HTTPError, ValueError, AttributeError, IndexError):
            ready = False
        self._checked = (time.monotonic(), ready)
        return ready

    def get_input_types(self) -> list[dict]:
        return [dict(IMAGE_TENSOR)]

    def get_output_types(self) -> list[dict]:
        return [dict(IMAGE_TENSOR)]

    async def predict(self, payload, headers=None, response_headers=None):
        try:
            response = await super().predict(payload, headers, response_headers)
        except httpx.HTTPStatusError as exc:
            raise TorchServeError(exc.response.status_code, error_message(exc.response)) from None
        except httpx.TransportError as exc:
            raise TorchServeError(503, f"TorchServe did not answer ({type(exc).__name__}: {exc})") from None
        if isinstance(payload, InferRequest) and isinstance(response, InferResponse):
            # the request's binary_data_output (or its outputs' binary_data) decides how the answer is encoded
            response = InferResponse(
                response_id=response.id,
                model_name=response.model_name,
                infer_outputs=response.outputs,
                model_version=response.model_version,
                parameters=response.parameters,
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )
        return response


class BoundedBody:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 ``{"error": ...}`` before the app reads
    it (Content-Length, or the bytes as they arrive); the body is handed on whole. Hand-written: neither uvicorn
    nor Starlette nor KServe's model server limits a body.

    And a v2 infer request that has neither a JSON Content-Type nor ``Inference-Header-Content-Length`` (what
    tritonclient sends for tensors all in JSON) gets that header as the body's length: the binary extension says
    such a body is all JSON, and KServe's model server would refuse it for want of the header."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, send, size: str) -> None:
        message = (f"the request is {size} bytes; this server reads at most {self.limit} (TorchServe's "
                   f"max_request_size)")  # fmt: skip
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send, declared.decode("latin-1")[:20])
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send, f"over {self.limit}")
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        headers = dict(scope["headers"])
        json_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().endswith(b"json")
        if scope["path"].endswith("/infer") and not json_type and JSON_LENGTH not in headers:
            length = str(len(whole["body"])).encode()
            scope = {**scope, "headers": [*scope["headers"], (JSON_LENGTH, length)]}

        async def replay():
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        return await self.app(scope, replay, send)


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of TorchServe's config.properties (comments and blank lines skipped)."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def loopback(address: str) -> str:
    """``host:port`` of a TorchServe address as seen from inside the pod (0.0.0.0 binds everything; connect to
    127.0.0.1)."""
    host_port = address.split("//", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"


def main() -> None:
    config = Path(os.environ.get("CONFIG_PATH", DEFAULT_CONFIG))
    protocol = os.environ.get("PROTOCOL_VERSION", "v1")
    if protocol not in PROTOCOLS:
        sys.exit(f"front: PROTOCOL_VERSION {protocol!r} is not served here; one of {', '.join(PROTOCOLS)}")
    props = read_properties(config)
    models = list(json.loads(props.get("model_snapshot", "{}")).get("models", {}))
    if not models:
        sys.exit(f"front: {config} lists no model in model_snapshot")
    inference = loopback(props.get("inference_address", "http://127.0.0.1:8080"))
    management = "http://" + loopback(props.get("management_address", "http://127.0.0.1:8081"))
    limit = int(props.get("max_request_size", "6553500"))
    ready_s = float(os.environ.get("VIZ_FRONT_READY_S", "600"))

    app.add_exception_handler(TorchServeError, torchserve_error)
    # KServe adds its exception handlers when it starts, by these names: its InferenceError handler becomes ours
    rest_server.inference_error_handler = inference_error
    app.add_middleware(BoundedBody, limit=limit)
    predictor = PredictorConfig(predictor_host=inference, predictor_protocol=protocol,
                                predictor_request_timeout_seconds=600)  # fmt: skip
    served = [TorchServeModel(name, management, ready_s) for name in models]
    for model in served:
        model.load()
    log.info("front: %s to TorchServe at %s, models %s", protocol, inference, ", ".join(models))
    ModelServer(enable_grpc=False, predictor_config=predictor).start(served)


if __name__ == "__main__":
    main()
