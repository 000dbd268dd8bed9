"""KServe's v1 and v2 requests through TorchServe's own envelope classes (``service_envelope=kserve`` and
``kservev2``, as KServe's TorchServe runtime sets them) in front of the handler, on the trained shapes model.

TorchServe builds the envelope around the handler's ``handle`` and hands it the batch as its worker does (one dict
a request, the body undecoded: the handler turns TorchServe's JSON decoding off); the envelope's answer is what the
worker serializes. Here the same: TorchServe's classes, its Context, and the JSON the worker would send.
"""

import base64
import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.images import shape_png
from tests.services import SHAPES, shapes_service
from vizserve import Limits

ts_context = pytest.importorskip("ts.context")
KServeEnvelope = pytest.importorskip("ts.torch_handler.request_envelope.kserve").KServeEnvelope
KServev2Envelope = pytest.importorskip("ts.torch_handler.request_envelope.kservev2").KServev2Envelope

HANDLER = Path(__file__).resolve().parents[2] / "handlers" / "viz_handler.py"

PNG = b"\x89PNG\r\n\x1a\n"


def load_handler_module():
    spec = importlib.util.spec_from_file_location("viz_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLASSES = ("circle", "square", "triangle", "cross", "horizontal stripes", "vertical stripes")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def shape(label: int) -> str:
    return b64(shape_png(label=label)[0])


@pytest.fixture(scope="module")
def handler():
    """The handler as TorchServe loads it, on the shapes service (without initialize's job calibration: these
    requests never reach the job system), with the guard that initialize puts in front of the envelopes."""
    module = load_handler_module()
    h = module.VizHandler()
    h.service = shapes_service(Limits(max_instances=4))
    h.initialized = True
    module.guard_kserve_envelopes()
    return h


def call(envelope_class, handler, body, headers=None):
    """One request through the envelope as TorchServe's worker runs it: ``(status, content type, JSON sent)``."""
    ctx = ts_context.Context("shapes_viz", str(SHAPES), {"model": {"modelName": "shapes_viz", "modelVersion": "1.0"}},
                             1, None, "0.12.0")  # fmt: skip
    ctx.request_ids = {0: "req-0"}
    ctx.request_processor = [ts_context.RequestProcessor(headers or {})]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = envelope_class(handler.handle).handle([{"body": bytearray(raw)}], ctx)
    assert isinstance(out, list) and len(out) == 1  # one answer for the one request, or TorchServe answers 503
    code, _ = ctx.get_response_status(0)
    return code or 200, ctx.get_response_content_type(0), json.loads(json.dumps(out[0]))


def v1(handler, body, headers=None):
    return call(KServeEnvelope, handler, body, headers)


def v2(handler, body):
    return call(KServev2Envelope, handler, body)


def plain(handler, fields):
    [reply] = handler.service.handle([{"body": fields}])
    return json.loads(reply.body)


def image_input(data, name="data", **extra):
    return {"name": name, "shape": [1], "datatype": "BYTES", "data": [data], **extra}


# -- v1 ------------------------------------------------------------------------------------------------------------


def test_v1_instances_in_every_accepted_form_answer_as_the_plain_api(handler):
    images = [shape(k) for k in range(4)]
    body = {"instances": [{"data": images[0]}, images[1], {"b64": images[2]}, {"data": {"b64": images[3]}}]}
    code, ctype, out = v1(handler, body)
    assert code == 200 and ctype == "application/json"
    predictions = out["predictions"]
    assert [p["predictions"][0]["label"] for p in predictions] == list(CLASSES[:4])
    _, _, single = v1(handler, {"instances": [{"data": images[0]}]})
    assert single["predictions"][0] == plain(handler, {"data": images[0]})  # exactly the plain API's answer


def test_v1_instance_options_give_pictures_as_base64_png(handler):
    body = {"instances": [{"data": shape(0), "mode": "gradcam", "topk": 3}, {"data": shape(3), "mode": "saliency"}]}
    code, _, out = v1(handler, body)
    assert code == 200, out
    first, second = out["predictions"]
    assert len(first["predictions"]) == 3 and first["gradcam"]["label"] == "circle"
    picture = base64.b64decode(first["gradcam"]["image"])
    assert picture.startswith(PNG) and Image.open(io.BytesIO(picture)).size[0] >= 64
    assert "saliency" in second and "gradcam" not in second


def test_v1_an_instance_without_an_image_asks_for_what_needs_none(handler):
    code, _, out = v1(handler, {"instances": [{"mode": "layers"}]})
    assert code == 200 and "features.0" in {layer["name"] for layer in out["predictions"][0]["layers"]}


def test_v1_one_bad_instance_answers_its_status_and_every_instance(handler):
    body = {"instances": [shape(1), {"data": "not base64!"}, {"data": shape(2), "topk": 99}]}
    code, _, out = v1(handler, body)
    assert code == 400
    good, bad, also_bad = out["predictions"]
    assert good["predictions"][0]["label"] == "square"
    assert bad["code"] == 400 and bad["type"] == "InvalidInput" and "base64" in bad["message"]
    assert also_bad["type"] == "InvalidOption" and "topk" in also_bad["message"]


def test_v1_explain_answers_explanations_with_gradcam(handler):
    code, _, out = v1(handler, {"instances": [shape(2)]}, headers={"explain": "True"})
    assert code == 200 and out["explanations"][0]["gradcam"]["label"] == "triangle"


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"\x89PNG\r\n\x1a\nnot json", 400, "not JSON"),
        (b'{"instances": [', 400, "does not parse"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{" * 100 + b"}" * 100, 400, "nested"),
        ({"data": "x", "mode": "gradcam"}, 400, "no 'instances'"),
        ({"inputs": []}, 400, "KServe v2"),
        ({"instances": [], "x": 1}, 400, "only 'instances'"),
        ({"instances": "abc"}, 400, "non-empty list"),
        ({"instances": []}, 400, "non-empty list"),
        ({"instances": ["a"] * 5}, 413, "at most 4 instances"),
        ({"instances": [3]}, 400, "got int"),
        ({"instances": [{"data": 3}]}, 400, "base64 text"),
        ({"instances": [{"data": "a", "b64": "b"}]}, 400, "not both"),
        ({"instances": [{"data": {"b64": "a", "x": 1}}]}, 400, "b64"),
    ],
)
def test_v1_malformed_requests_answer_4xx_in_the_envelope(handler, body, status, words):
    code, ctype, out = v1(handler, body)
    assert code == status and ctype == "application/json"
    [error] = out["predictions"]
    assert error["code"] == status and words in error["message"], error


@pytest.mark.parametrize(
    "instance, words",
    [
        ({"mode": "actmax", "channel": "0"}, "plain API"),
        ({"mode": "classify,invert", "data": "AAAA"}, "plain API"),
        ({"job": "a" * 22}, "plain API"),
        ({"data": "AAAA", "mode": "gradcam", "format": "png"}, "format=png"),
    ],
)
def test_v1_jobs_and_bare_pictures_are_refused_with_the_way_out(handler, instance, words):
    code, _, out = v1(handler, {"instances": [instance]})
    assert code == 400 and words in out["predictions"][0]["message"]


def test_v1_a_base64_image_over_the_cap_is_refused_before_decoding(handler):
    service = handler.service
    handler.service = shapes_service(Limits(max_instance_bytes=1000))
    try:
        code, _, out = v1(handler, {"instances": [{"data": "A" * 2000}]})
    finally:
        handler.service = service
    assert code == 413 and "max_instance_bytes" in out["predictions"][0]["message"]


# -- v2 ------------------------------------------------------------------------------------------------------------


def test_v2_bytes_inputs_answer_as_outputs_of_the_same_name(handler):
    body = {"id": "r-1", "inputs": [image_input(shape(3)), image_input(shape(5), name="second")]}
    code, ctype, out = v2(handler, body)
    assert code == 200 and ctype == "application/json"
    assert out["id"] == "r-1" and out["model_name"] == "shapes_viz" and out["model_version"] == "1.0"
    assert [o["name"] for o in out["outputs"]] == ["data", "second"]
    for output in out["outputs"]:
        assert output["datatype"] == "BYTES" and output["shape"] == [1] and len(output["data"]) == 1
    answers = [json.loads(o["data"][0]) for o in out["outputs"]]
    assert [a["predictions"][0]["label"] for a in answers] == ["cross", "vertical stripes"]
    _, _, single = v2(handler, {"inputs": [image_input(shape(3))]})
    assert json.loads(single["outputs"][0]["data"][0]) == plain(handler, {"data": shape(3)})


def test_v2_options_as_parameters_and_option_inputs(handler):
    body = {
        "parameters": {"mode": "saliency", "topk": 1},  # the request's, for every image
        "inputs": [
            {"name": "mode", "shape": [1], "datatype": "BYTES", "data": ["gradcam"]},  # over the request's
            {"name": "topk", "shape": [1], "datatype": "INT32", "data": [2]},
            image_input(shape(0), name="a"),
            image_input(shape(1), name="b", parameters={"topk": 4}),  # the input's own, over everything
        ],
    }
    code, _, out = v2(handler, body)
    assert code == 200, out
    assert [o["name"] for o in out["outputs"]] == ["a", "b"]  # option inputs have no output
    a, b = (json.loads(o["data"][0]) for o in out["outputs"])
    assert len(a["predictions"]) == 2 and len(b["predictions"]) == 4
    assert a["gradcam"]["label"] == "circle" and "saliency" not in a
    assert base64.b64decode(b["gradcam"]["image"]).startswith(PNG)


def test_v2_as_kserves_model_server_passes_it_on(handler):
    """KServe's model server re-encodes a v2 request (InferRequest.to_rest): an id of its own, model_name."""
    body = {"id": "k-1", "model_name": "shapes_viz", "inputs": [image_input(shape(4))], "parameters": {"topk": 2}}
    code, _, out = v2(handler, body)
    assert code == 200 and out["id"] == "k-1"
    assert [p["label"] for p in json.loads(out["outputs"][0]["data"][0])["predictions"]][0] == "horizontal stripes"


def test_v2_a_request_without_an_id_gets_torchserves_request_id(handler):
    code, _, out = v2(handler, {"inputs": [image_input(shape(0))]})
    assert code == 200 and out["id"] == "req-0"


def test_v2_one_bad_input_answers_its_status_and_names_it_in_the_protocols_error_form(handler):
    body = {"id": "r-2", "inputs": [image_input(shape(2)), image_input("%%%", name="broken")]}
    code, ctype, out = v2(handler, body)
    assert code == 400 and ctype == "application/json"
    assert list(out) == ["error"] and out["error"].startswith("input 'broken': ") and "base64" in out["error"]
    [reply] = handler.service.handle([{"body": {"data": "%%%"}}])
    assert out["error"] == "input 'broken': " + json.loads(reply.body)["message"]  # the plain API's own message
    # the refused request's id is not carried over to the next request (the envelope keeps it on the context)
    code, _, out = v2(handler, {"inputs": [image_input(shape(2))]})
    assert code == 200 and out["id"] == "req-0" and [o["name"] for o in out["outputs"]] == ["data"]


def test_v2_the_binary_extensions_parameters_are_no_options(handler):
    """What KServe's model server passes on from a tritonclient request: ``binary_data_output`` among the request's
    parameters (its binary inputs already decoded to JSON), ``binary_data`` on an input."""
    body = {
        "id": "t-1",
        "model_name": "shapes_viz",
        "parameters": {"binary_data_output": True, "topk": 2},
        "inputs": [image_input(shape(1), name="image", parameters={"binary_data": True, "binary_data_size": 9})],
        "outputs": [{"name": "image", "parameters": {"binary_data": True}}],
    }
    code, _, out = v2(handler, body)
    assert code == 200, out
    answer = json.loads(out["outputs"][0]["data"][0])
    assert [p["label"] for p in answer["predictions"]][0] == "square" and len(answer["predictions"]) == 2


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"not json", 400, "not JSON"),
        ({"instances": ["x"]}, 400, "KServe v1"),
        ({"inputs": "x"}, 400, "non-empty list"),
        ({"inputs": [image_input("x")], "extra": 1}, 400, "also has extra"),
        ({"id": 7, "inputs": [image_input("x")]}, 400, "'id' must be text"),
        ({"parameters": [1], "inputs": [image_input("x")]}, 400, "'parameters' must be an object"),
        ({"inputs": [{"name": "data", "shape": [1], "data": ["x"]}]}, 400, "has no 'datatype'"),
        ({"inputs": [{**image_input("x"), "datatype": "STRING"}]}, 400, "not a KServe v2 datatype"),
        ({"inputs": [{**image_input("x"), "data": ["x", "y"]}]}, 400, "exactly one value"),
        ({"inputs": [{**image_input("x"), "data": []}]}, 400, "exactly one value"),
        ({"inputs": [{**image_input("x"), "data": [5]}]}, 400, "must be text"),
        ({"inputs": [{**image_input("x"), "shape": "1"}]}, 400, "'shape'"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1]}]}, 400, "not as tensors"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}, 400, "one value"),
        ({"inputs": [image_input("x"), image_input("y")]}, 400, "more than once"),
        ({"inputs": [{**image_input("x"), "parameters": 3}]}, 400, "'parameters'"),
        ({"inputs": [{"name": "topk", "shape": [1], "datatype": "INT32", "data": [2]}]}, 400, "no image input"),
        ({"inputs": [image_input("x", name=f"i{k}") for k in range(5)]}, 413, "at most 4 images"),
        ({"inputs": [image_input("x", name=f"i{k}") for k in range(65)]}, 413, "at most 64 inputs"),
    ],
)
def test_v2_malformed_requests_answer_4xx_in_the_protocols_error_form(handler, body, status, words):
    code, ctype, out = v2(handler, body)
    assert code == status and ctype == "application/json"
    assert list(out) == ["error"] and words in out["error"], out


@pytest.mark.parametrize(
    "inp, words",
    [
        ({"name": "tensor", "shape": [1], "datatype": "FP32", "data": [0.5]}, "as BYTES"),
        (image_input("AAAA", parameters={"mode": "actmax"}), "plain API"),
        (image_input("AAAA", parameters={"format": "png", "mode": "gradcam"}), "format=png"),
        (image_input("AAAA", parameters={"data": "AAAA"}), "no parameter"),
    ],
)
def test_v2_refused_inputs_say_why(handler, inp, words):
    code, _, out = v2(handler, {"inputs": [inp]})
    assert code == 400 and words in out["error"] and ": input '" not in out["error"]  # one image: not named twice


def test_the_guard_is_installed_once_and_leaves_the_plain_api_alone(handler):
    module = load_handler_module()
    guarded = KServeEnvelope.parse_input
    module.guard_kserve_envelopes()
    assert KServeEnvelope.parse_input is guarded and KServev2Envelope.parse_input.viz_guarded
    assert KServev2Envelope.format_output.viz_guarded and not hasattr(KServeEnvelope.format_output, "viz_guarded")
    ctx = ts_context.Context("shapes_viz", str(SHAPES), {}, 1, None, "0.12.0")
    ctx.request_processor = [ts_context.RequestProcessor({})]
    [out] = handler.handle([{"body": bytearray(json.dumps({"instances": [shape(0)]}).encode())}], ctx)
    assert ctx.get_response_status(0)[0] == 400 and "unknown option 'instances'" in json.loads(out)["message"]
