"""KServe's v1 and v2 protocols through a real TorchServe started as KServe's TorchServe runtime starts it in a
predictor pod: kserve/config/config.properties (only ports, worker ports, model store and the model list changed),
``TS_SERVICE_ENVELOPE=kserve`` (protocolVersion v1) or ``kservev2`` (v2) in its environment, and the runtime's command
line. Each protocol gets its own TorchServe, serving only the shapes model, one after the other.

Requests (JSON, no token, as KServe's model server sends them) go to ``/predictions/<model>`` and to TorchServe's
KServe routes, where KServe forwards (``/v1/models/<model>:predict``, ``:explain``, ``/v2/models/<model>/infer``).
Then KServe's own model server (PyPI ``kserve``, in .venv-kserve) in front of that TorchServe, as kserve/front.py
runs it in a pod, with a real Open Inference Protocol client, ``tritonclient[http]``, at its defaults (binary inputs,
binary outputs). What no cluster here can check (KServe's ingress, storage, autoscaling, the pod's image) is listed
in docs/deploying.md's KServe section.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from examples.shapes.shapes_data import CLASSES
from scripts.local_torchserve import FRONT_PYTHON, KSERVE_CONFIG, ROOT, kserve_config, kserve_front, kserve_torchserve
from tests.images import shape_png

try:  # requirements-dev.txt
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
except ImportError:  # the front's tests say so; the others need no client
    triton = None

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"
ROUTES = {"kserve": "/v1/models/shapes_viz:predict", "kservev2": "/v2/models/shapes_viz/infer"}
README = (ROOT / "docs" / "deploying.md").read_text()  # the KServe section, linked from the README


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


@pytest.mark.parametrize("kserve_server", ["kserve"], indirect=True)  # KServe's :explain is a v1 route
def test_v1_explain_answers_explanations_with_gradcam(kserve_server):
    envelope, server = kserve_server
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
        if envelope == "kserve":
            [error] = r.json()["predictions"]
            assert error["code"] == 400 and error["message"], error
        else:  # the Open Inference Protocol's error form
            assert list(r.json()) == ["error"] and r.json()["error"], r.text[:300]
    assert server.worker_pids("shapes_viz") == [pid]
    assert post(server, body(envelope, [b64(2)])).status_code == 200


def test_optimizations_and_bare_pictures_are_refused_with_the_way_out(kserve_server):
    envelope, server = kserve_server
    for options, words in (({"mode": "actmax"}, "plain API"), ({"mode": "gradcam", "format": "png"}, "format=png")):
        r = post(server, body(envelope, [b64(1)], **options))
        assert r.status_code == 400, r.text
        message = answers(envelope, r.json())[0]["message"] if envelope == "kserve" else r.json()["error"]
        assert words in message, r.text[:300]


def test_the_readmes_curl_command_works_as_written(kserve_server, tmp_path):
    envelope, server = kserve_server
    [command] = [block for block in re.findall(r"```bash\n(.*?)```", README, re.S) if ROUTES[envelope] in block]
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "shape.png").write_bytes(shape_png(label=0)[0])
    env = {**os.environ, "URL": server.url, "HOST": "cnn-viz.default.example.com"}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = answers(envelope, json.loads(done.stdout))
    assert len(got) == (2 if envelope == "kserve" else 1)  # v1: a plain instance and a gradcam one; v2: gradcam
    assert all(a["predictions"][0]["label"] == "circle" for a in got) and len(got[-1]["predictions"]) == 3
    assert base64.b64decode(got[-1]["gradcam"]["image"]).startswith(PNG)


# -- KServe's model server in front (kserve/front.py), as clients reach it in a pod --------------------------------

PROTOCOL_VERSIONS = {"kserve": "v1", "kservev2": "v2"}
OIP_IMAGE = {"name": "image", "datatype": "BYTES", "shape": [1]}


@pytest.fixture(scope="module")
def front(kserve_server):
    """``(envelope, TorchServe, the front's URL)``: KServe's model server with the protocol KServe's controller sets
    for that envelope (``PROTOCOL_VERSION``)."""
    envelope, server = kserve_server
    if not FRONT_PYTHON.exists():
        pytest.skip(f"KServe's model server is not installed ({FRONT_PYTHON}): ./scripts/setup.sh --dev makes it")
    with kserve_front(server, PROTOCOL_VERSIONS[envelope]) as url:
        yield envelope, server, url


@pytest.fixture
def client(front):
    """tritonclient's HTTP client on the front (for tests of v2 only), closed after the test."""
    _, _, url = front
    if triton is None:
        pytest.skip("tritonclient[http] is not installed: ./scripts/setup.sh --dev (requirements-dev.txt)")
    with triton.InferenceServerClient(urlsplit(url).netloc, connection_timeout=30, network_timeout=120) as client:
        yield client


def oip_input(data: bytes | str, name: str = "image", binary: bool = True):
    """A one-element BYTES input, binary as tritonclient sends it by default."""
    inp = triton.InferInput(name, [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
    return inp


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_oip_client_finds_the_server_and_the_model_ready_and_described(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("shapes_viz") and not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata("shapes_viz")
    assert meta["name"] == "shapes_viz" and meta["inputs"] == [OIP_IMAGE] and meta["outputs"] == [OIP_IMAGE]
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no_such_model")
    assert err.value.status() == "404" and "no_such_model" in err.value.message()


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_oip_client_defaults_binary_in_and_out_classify_and_gradcam(client):
    for label in (0, 3, 5):
        result = client.infer("shapes_viz", [oip_input(b64(label))])  # no outputs named: binary_data_output
        [output] = result.get_response()["outputs"]
        assert output["name"] == "image" and output["datatype"] == "BYTES" and output["shape"] == [1]
        assert output["parameters"]["binary_data_size"] > 0 and "data" not in output  # a binary answer
        [text] = result.as_numpy("image")
        assert json.loads(text)["predictions"][0]["label"] == CLASSES[label]
    # options: an input named after one (binary too), and the request's parameters
    result = client.infer("shapes_viz", [oip_input(b64(0)), oip_input("gradcam", name="mode")], parameters={"topk": 2})
    assert [o["name"] for o in result.get_response()["outputs"]] == ["image"]
    answer = json.loads(result.as_numpy("image")[0])
    assert len(answer["predictions"]) == 2 and answer["gradcam"]["label"] == "circle"
    picture = base64.b64decode(answer["gradcam"]["image"])
    assert picture.startswith(PNG)
    Image.open(io.BytesIO(picture)).verify()


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_oip_client_raises_its_own_exception_with_the_servers_message(front, client):
    envelope, server, _ = front
    direct = post(server, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
                  ROUTES[envelope])  # fmt: skip
    assert direct.status_code == 400 and "base64" in direct.json()["error"]
    cases = [
        ([oip_input("%%%")], {}, "400", direct.json()["error"]),  # TorchServe's message, unchanged
        ([oip_input(b64(1))], {"mode": "actmax"}, "400", "plain API"),
        ([oip_input(shape_png(label=1)[0])], {}, "400", "base64 text"),  # raw image bytes: not UTF-8
        ([oip_input(b64(1), name=f"i{k}") for k in range(9)], {}, "413", "at most 8 images"),
    ]
    for inputs, parameters, status, words in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer("shapes_viz", inputs, parameters=parameters)
        assert err.value.status() == status and words in err.value.message(), (status, err.value.message()[:300])
        assert len(err.value.message()) < 1000
    assert client.is_model_ready("shapes_viz")  # nothing of that hurt the worker


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_oip_json_path_through_the_front_still_works(front, client):
    envelope, _, url = front
    wanted = [triton.InferRequestedOutput("image", binary_data=False)]
    result = client.infer("shapes_viz", [oip_input(b64(4), binary=False)], outputs=wanted)
    [output] = result.get_response()["outputs"]
    assert "binary_data_size" not in (output.get("parameters") or {})  # a JSON answer
    assert json.loads(output["data"][0])["predictions"][0]["label"] == CLASSES[4]
    # a plain JSON request, as the README's curl command sends it (to the front, where KServe's ingress leads)
    r = requests.post(url + ROUTES[envelope], json=body(envelope, [b64(2)], mode="gradcam"), timeout=120)
    assert r.status_code == 200, r.text[:300]
    [answer] = answers(envelope, r.json())
    assert answer["gradcam"]["label"] == CLASSES[2] and r.json()["outputs"][0]["name"] == "image0"


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_the_readmes_tritonclient_example_works_as_written(front, client, tmp_path):
    _, _, url = front
    [example] = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "tritonclient.http" in b]
    assert '"localhost:8080"' in example
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "shape.png").write_bytes(shape_png(label=0)[0])
    script = example.replace('"localhost:8080"', repr(urlsplit(url).netloc)) + "\nprint(json.dumps(answer))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["predictions"][0]["label"] == "circle" and len(answer["predictions"]) == 3
    assert base64.b64decode(answer["gradcam"]["image"]).startswith(PNG)


def raw_http(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a request as bytes (what requests cannot: a declared length it never sends) and read the answer."""
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=60) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_the_front_refuses_a_body_over_torchserves_limit_before_reading_it(front):
    envelope, server, url = front
    limit = int(re.search(r"^max_request_size=(\d+)$", KSERVE_CONFIG.read_text(), re.M)[1])
    path = ROUTES[envelope].encode()
    declared = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, limit + 1)
    chunked = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (path, limit + 1)
    for head, sent in ((declared, b""), (chunked, b"{" + b" " * limit)):
        answer = raw_http(url, head, sent)
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b"max_request_size" in rest.partition(b"\r\n\r\n")[2]
    assert requests.get(f"{url}/v2/models/shapes_viz/ready", timeout=10).json()["ready"] is True


@pytest.mark.parametrize("kserve_server", ["kserve"], indirect=True)
def test_v1_through_kserves_front(front):
    envelope, _, url = front
    assert requests.get(f"{url}/v1/models/shapes_viz", timeout=10).json() == {"name": "shapes_viz", "ready": True}
    r = requests.post(url + ROUTES[envelope], json=body(envelope, [b64(3), b64(1)]), timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert [a["predictions"][0]["label"] for a in answers(envelope, r.json())] == [CLASSES[3], CLASSES[1]]
    r = requests.post(url + ROUTES[envelope], json=body(envelope, [b64(3), "%%%"]), timeout=120)
    assert r.status_code == 400 and list(r.json()) == ["error"] and "base64" in r.json()["error"], r.text[:300]


@pytest.mark.parametrize("kserve_server", ["kservev2"], indirect=True)
def test_model_ready_follows_torchserves_workers(front, client):
    """Last: it takes the model's worker away and waits for a new one."""
    _, server, _ = front
    scale = f"{server.management}/models/shapes_viz"
    requests.put(scale, params={"min_worker": 0, "max_worker": 0, "synchronous": "true"}, timeout=60).raise_for_status()
    try:
        time.sleep(1.2)  # the front asks TorchServe at most once a second
        assert not client.is_model_ready("shapes_viz")
        with pytest.raises(InferenceServerException) as err:
            client.infer("shapes_viz", [oip_input(b64(0))])
        assert err.value.status() == "503" and "not ready" in err.value.message()
    finally:
        requests.put(scale, params={"min_worker": 1, "max_worker": 1, "synchronous": "true"}, timeout=120)
    deadline = time.monotonic() + 120
    while not client.is_model_ready("shapes_viz") and time.monotonic() < deadline:
        time.sleep(1)
    assert client.is_model_ready("shapes_viz")
    assert json.loads(client.infer("shapes_viz", [oip_input(b64(5))]).as_numpy("image")[0])["predictions"][0][
        "label"] == CLASSES[5]  # fmt: skip
