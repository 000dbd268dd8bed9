"""KServe's v1 and v2 protocols through a real TorchServe started as KServe's TorchServe runtime starts it in a
predictor pod: kserve/config/config.properties (only ports, worker ports, model store and the model list changed),
``TS_SERVICE_ENVELOPE=kserve`` (protocolVersion v1) or ``kservev2`` (v2) in its environment, and the runtime's command
line. Each protocol gets its own TorchServe, serving only the shapes model, one after the other.

Requests (JSON, no token, as KServe's model server sends them) go to ``/predictions/<model>`` and to TorchServe's
KServe routes, where KServe forwards (``/v1/models/<model>:predict``, ``:explain``, ``/v2/models/<model>/infer``).
What no cluster here can check (KServe's wrapper and ingress in between, storage, autoscaling) is listed in the
README's KServe section.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from examples.shapes.shapes_data import CLASSES
from scripts.local_torchserve import KSERVE_CONFIG, ROOT, kserve_config, kserve_torchserve
from tests.images import shape_png

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"
ROUTES = {"kserve": "/v1/models/shapes_viz:predict", "kservev2": "/v2/models/shapes_viz/infer"}
README = (ROOT / "README.md").read_text()


def b64(label: int) -> str:
    return base64.b64encode(shape_png(label=label)[0]).decode()


def body(envelope: str, images: list[str], **options) -> dict:
    """The request KServe's documentation shows for each protocol: v1 instances with the image as ``data`` and
    options beside it; v2 BYTES inputs, options as the request's parameters."""
    if envelope == "kserve":
        return {"instances": [{"data": image, **options} for image in images]}
    inputs = [{"name": f"image{k}", "shape": [1], "datatype": "BYTES", "data": [im]} for k, im in enumerate(images)]
    return {"inputs": inputs, **({"parameters": options} if options else {})}


def answers(envelope: str, out: dict) -> list:
    """Each image's answer: v1 predictions are the plain API's JSON objects, v2 outputs carry them as text."""
    if envelope == "kserve":
        return out["predictions"]
    return [json.loads(output["data"][0]) for output in out["outputs"]]


@pytest.fixture(scope="module")
def shapes_archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("kserve_archives")
    subprocess.run([str(ROOT / "archive.sh"), "--out", str(out), "shapes"], check=True, timeout=600)
    return out / "shapes_viz.mar"


@pytest.fixture(scope="module", params=["kserve", "kservev2"])
def kserve_server(request, shapes_archive, tmp_path_factory):
    work = tmp_path_factory.mktemp(request.param)
    store = work / "model-store"
    store.mkdir()
    shutil.copy(shapes_archive, store)
    with kserve_torchserve(store, ["shapes_viz"], work, request.param) as server:
        yield request.param, server


def post(server, data, path="/predictions/shapes_viz") -> requests.Response:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return requests.post(server.url + path, data=raw, headers={"Content-Type": "application/json"}, timeout=120)


def test_the_server_runs_the_manifests_configuration(kserve_server, tmp_path):
    envelope, server = kserve_server
    used = (server.workdir / "config.properties").read_text().splitlines()
    shipped = KSERVE_CONFIG.read_text().splitlines()
    changed = {line.split("=", 1)[0] for line in set(used) ^ set(shipped)}
    assert changed <= {"inference_address", "management_address", "metrics_address", "grpc_inference_port",
                       "grpc_management_port", "model_store", "model_snapshot", "initial_worker_port"}  # fmt: skip
    assert "service_envelope=$$TS_SERVICE_ENVELOPE$$" in used and "disable_token_authorization=true" in used
    assert kserve_config(tmp_path, [1, 2, 3, 4, 5], 10_000, ["shapes_viz"]).count("\n") == len(shipped) + 1
    # the snapshot's batchSize 1 is what TorchServe runs (the archive's model-config.yaml says 8)
    [described] = requests.get(f"{server.management}/models/shapes_viz", timeout=10).json()
    assert described["batchSize"] == 1, described


def test_classify_answers_each_image_with_its_shape(kserve_server):
    envelope, server = kserve_server
    for path in ("/predictions/shapes_viz", ROUTES[envelope]):
        r = post(server, body(envelope, [b64(3), b64(0), b64(5)]), path)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        labels = [a["predictions"][0]["label"] for a in answers(envelope, r.json())]
        assert labels == [CLASSES[3], CLASSES[0], CLASSES[5]], (path, labels)
    if envelope == "kservev2":
        out = r.json()
        assert out["model_name"] == "shapes_viz"
        assert [o["name"] for o in out["outputs"]] == ["image0", "image1", "image2"]
        assert all(o["datatype"] == "BYTES" and o["shape"] == [1] for o in out["outputs"])


def test_gradcam_comes_back_as_a_png_that_decodes(kserve_server):
    envelope, server = kserve_server
    r = post(server, body(envelope, [b64(0)], mode="gradcam", topk=2))
    assert r.status_code == 200, r.text
    [answer] = answers(envelope, r.json())
    assert len(answer["predictions"]) == 2 and answer["gradcam"]["label"] == "circle"
    picture = base64.b64decode(answer["gradcam"]["image"])
    assert picture.startswith(PNG)
    Image.open(io.BytesIO(picture)).verify()


def test_v1_explain_answers_explanations_with_gradcam(kserve_server):
    envelope, server = kserve_server
    if envelope != "kserve":
        pytest.skip("KServe's :explain is a v1 route")
    r = post(server, body(envelope, [b64(2)]), "/v1/models/shapes_viz:explain")
    assert r.status_code == 200, r.text
    [answer] = r.json()["explanations"]
    assert answer["gradcam"]["label"] == "triangle" and base64.b64decode(answer["gradcam"]["image"]).startswith(PNG)


def test_concurrent_requests_are_each_answered(kserve_server):
    """batchSize 1: TorchServe's envelopes answer one request a batch; concurrent requests never share one."""
    envelope, server = kserve_server
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda k: post(server, body(envelope, [b64(k)])), range(6)))
    assert [r.status_code for r in replies] == [200] * 6, [r.text[:200] for r in replies]
    assert [answers(envelope, r.json())[0]["predictions"][0]["label"] for r in replies] == list(CLASSES)


def test_malformed_requests_answer_400_and_the_worker_lives_on(kserve_server):
    envelope, server = kserve_server
    [pid] = server.worker_pids("shapes_viz")
    other = {"inputs": [{"name": "x"}]} if envelope == "kserve" else {"instances": ["x"]}
    missing = {"instances": "x"} if envelope == "kserve" else {"inputs": [{"name": "x", "shape": [1], "data": ["x"]}]}
    for bad in (b"\x89PNG\r\n\x1a\nnot json", b'{"instances": [', b"[]", other, missing, b"{" * 500 + b"}" * 500):
        r = post(server, bad)
        assert r.status_code == 400, (bad[:40], r.status_code, r.text[:300])
        errors = r.json()["predictions"] if envelope == "kserve" else [json.loads(r.json()["outputs"][0]["data"][0])]
        assert errors[0]["code"] == 400 and errors[0]["message"], errors
    assert server.worker_pids("shapes_viz") == [pid]
    assert post(server, body(envelope, [b64(2)])).status_code == 200


def test_optimizations_and_bare_pictures_are_refused_with_the_way_out(kserve_server):
    envelope, server = kserve_server
    for options, words in (({"mode": "actmax"}, "plain API"), ({"mode": "gradcam", "format": "png"}, "format=png")):
        r = post(server, body(envelope, [b64(1)], **options))
        assert r.status_code == 400, r.text
        [error] = answers(envelope, r.json())
        assert words in error["message"], error


def test_the_readmes_curl_command_works_as_written(kserve_server, tmp_path):
    envelope, server = kserve_server
    [command] = [block for block in re.findall(r"```bash\n(.*?)```", README, re.S) if ROUTES[envelope] in block]
    (tmp_path / "shape.png").write_bytes(shape_png(label=0)[0])
    env = {**os.environ, "URL": server.url, "HOST": "cnn-viz.default.example.com"}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = answers(envelope, json.loads(done.stdout))
    assert len(got) == (2 if envelope == "kserve" else 1)  # v1: a plain instance and a gradcam one; v2: gradcam
    assert all(a["predictions"][0]["label"] == "circle" for a in got) and len(got[-1]["predictions"]) == 3
    assert base64.b64decode(got[-1]["gradcam"]["image"]).startswith(PNG)
