"""Against a real TorchServe on loopback: what a person with curl would see."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from cnnviz import build_model, read_state_dict
from tests.images import jpeg, npy, png_header_only, raw_array, shape_folder, shape_png

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n"


def test_requests_without_the_token_are_refused(server):
    for method, url in [("get", f"{server.url}/ping"), ("post", f"{server.url}/predictions/alexnet_viz")]:
        r = requests.request(method, url, data=jpeg(), timeout=30)
        assert r.status_code in (400, 401), r.text
        assert "Token Authorization failed" in r.text
    r = requests.post(f"{server.url}/predictions/alexnet_viz", data=jpeg(), timeout=30,
                      headers={"Authorization": "Bearer wrong", "Content-Type": "image/jpeg"})  # fmt: skip
    assert r.status_code in (400, 401)
    r = requests.get(f"{server.url}/ping", headers=server.auth(), timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "Healthy"


def test_model_registration_api_is_off(server):
    r = requests.post(
        f"{server.management}/models",
        params={"url": "https://example.com/x.mar"},
        headers={"Authorization": f"Bearer {server.management_key}"},
        timeout=30,
    )
    assert r.status_code == 405, r.text  # TorchServe answers registration with 405 when enable_model_api=false
    models = requests.get(f"{server.management}/models", headers={"Authorization": f"Bearer {server.management_key}"},
                          timeout=30).json()["models"]  # fmt: skip
    assert sorted(m["modelName"] for m in models) == [
        "alexnet_viz", "inception_v3_viz", "motion_viz", "r3d_18_viz", "resnet18_viz", "shapes_short_viz",
        "shapes_viz",
    ]  # fmt: skip


def test_inception_v3_is_fed_299_px_and_explained_at_its_last_stage(server):
    d = server.post("inception_v3_viz", data={"mode": "describe"}).json()["describe"]
    assert d["input_shape"] == [3, 299, 299] and d["preprocess"]["resize"] == 342 and d["min_side"] == 75
    assert d["cam_layer"] == "Mixed_7c" and d["featuremap_layers"] == ["Conv2d_1a_3x3.conv", "Mixed_7c"]
    assert "describe" in [m["name"] for m in d["modes"]] and d["num_classes"] == 1000
    fields = {"mode": "gradcam,featuremaps", "layers": "Mixed_7c", "channels": "8", "raw": "true"}
    r = server.post("inception_v3_viz", files={"data": jpeg(500, 375)}, data=fields)
    assert r.status_code == 200, r.text[:300]
    out = r.json()
    assert out["gradcam"]["layer"] == "Mixed_7c" and raw_array(out["gradcam"]["raw"]).shape == (299, 299)
    assert out["featuremaps"][0]["shape"] == [2048, 8, 8] and len(out["predictions"]) == 5


def test_bare_image_body_gets_top5(server):
    r = server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "alexnet_viz" and out["arch"] == "alexnet" and out["device"] == "cpu"
    assert out["weights"] == "file:alexnet_seeded.pt"
    preds = out["predictions"]
    assert len(preds) == 5 and all(isinstance(p["label"], str) and p["label"] for p in preds)
    assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
    assert 0 < sum(p["score"] for p in preds) <= 1


def test_raw_feature_maps_equal_a_direct_torch_computation(server, alexnet_weights):
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 224, 224)).astype(np.float32))
    r = server.post(
        "alexnet_viz",
        files={"data": ("x.npy", npy(x.numpy()), "application/octet-stream")},
        data={"mode": "featuremaps", "raw": "true", "topk": "3"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    model = build_model("alexnet")
    model.load_state_dict(read_state_dict(alexnet_weights))
    with torch.no_grad():
        conv1 = model.features[:1](x[None])[0]
        conv5 = model.features[:11](x[None])[0]  # features.10, before its in-place ReLU
        probs = model(x[None]).softmax(-1)[0]
    got = {fm["layer"]: fm for fm in out["featuremaps"]}
    assert list(got) == ["features.0", "features.10"]
    assert got["features.0"]["shape"] == [64, 55, 55]
    np.testing.assert_allclose(raw_array(got["features.0"]["raw"]), conv1.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(raw_array(got["features.10"]["raw"]), conv5.numpy(), rtol=1e-4, atol=1e-4)
    assert conv5.min() < 0  # the raw map really is pre-ReLU
    top = probs.topk(3)
    assert [p["index"] for p in out["predictions"]] == top.indices.tolist()
    assert [p["score"] for p in out["predictions"]] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_json_body_with_every_mode(server):
    body = {"data": base64.b64encode(jpeg()).decode(), "mode": "featuremaps,filters,layers", "channels": "16"}
    r = server.post("resnet18_viz", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["weights"] == "random"
    assert [f["layer"] for f in out["featuremaps"]] == ["conv1", "layer4.1.conv2"]
    assert [f["shape"] for f in out["featuremaps"]] == [[64, 112, 112], [512, 7, 7]]
    assert [f["shape"] for f in out["filters"]] == [[64, 3, 7, 7], [512, 512, 3, 3]]
    for entry in out["featuremaps"] + out["filters"]:
        assert base64.b64decode(entry["image"]).startswith(PNG)
        assert "raw" not in entry
    layers = {entry["name"]: entry for entry in out["layers"]}
    assert layers["layer4.1.conv2"] == {"name": "layer4.1.conv2", "type": "Conv2d", "output_shape": [512, 7, 7]}
    assert layers["fc"]["output_shape"] == [1000]


def test_format_png_returns_the_picture_itself(server):
    r = server.post("alexnet_viz", files={"data": ("cat.jpg", jpeg())},
                    data={"mode": "featuremaps", "layers": "features.3", "format": "png"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("image/png")
    assert r.content.startswith(PNG)


def test_layers_and_filters_need_no_image(server):
    r = server.post("resnet18_viz", json={"mode": "layers"})
    assert r.status_code == 200 and "predictions" not in r.json()
    r = server.post("alexnet_viz", data={"mode": "filters", "layers": "features.0", "format": "png"})
    assert r.status_code == 200 and r.content.startswith(PNG)


BAD = [
    ({"data": b"not an image"}, 400, "InvalidInput", "not an image"),
    ({"data": jpeg()[:300]}, 400, "InvalidInput", "cannot decode"),
    ({"data": png_header_only(20_000, 20_000)}, 413, "InputTooLarge", "400,000,000 pixels"),
    ({"data": jpeg(), "mode": "featuremaps", "layers": "features.99"}, 400, "UnknownLayer", "valid: features"),
    ({"data": jpeg(), "mode": "featuremaps", "layers": "__class__.__init__"}, 400, "UnknownLayer", "unknown"),
    ({"data": jpeg(), "topk": "NaN"}, 400, "InvalidOption", "topk"),
    ({"data": jpeg(), "mode": "deepdream"}, 400, "InvalidOption", "unknown mode"),
    ({"data": jpeg(), "layr": "features.0"}, 400, "InvalidOption", "unknown option 'layr'"),
    ({"data": npy(np.zeros((3, 10, 10), np.float32))}, 400, "InvalidInput", r"63..1024"),
]


@pytest.mark.parametrize("fields, status, kind, text", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_requests_get_a_clear_4xx_and_the_worker_lives_on(server, fields, status, kind, text):
    before = server.worker_pids("alexnet_viz")
    files = {"data": ("input", fields.pop("data"))}
    r = server.post("alexnet_viz", files=files, data=fields)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == status and err["type"] == kind and text in err["message"]
    assert server.worker_pids("alexnet_viz") == before
    assert server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_concurrent_mixed_requests_each_get_their_own_answer(server):
    def call(i: int):
        if i % 4 == 3:
            return i, server.post("resnet18_viz", files={"data": ("x", b"junk")}, data={"topk": str(i + 1)})
        mode = ["classify", "featuremaps", "filters"][i % 3]
        fields = {"mode": mode, "topk": str(i + 1), **({"channels": "4"} if mode != "classify" else {})}
        return i, server.post("resnet18_viz", files={"data": ("x.jpg", jpeg(seed=i))}, data=fields)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(12)))
    for i, r in results:
        if i % 4 == 3:
            assert r.status_code == 400 and r.json()["type"] == "InvalidInput"
            continue
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["predictions"]) == i + 1
        assert ("featuremaps" in out) == (i % 3 == 1) and ("filters" in out) == (i % 3 == 2)


def test_prometheus_metrics_endpoint(server):
    r = requests.get(f"{server.metrics}/metrics", timeout=30)
    assert r.status_code == 200
    assert "ts_inference_requests_total" in r.text


def test_key_file_is_private(server):
    mode = (server.workdir / "key_file.json").stat().st_mode & 0o777
    assert mode & 0o077 == 0, oct(mode)
    assert json.loads((server.workdir / "key_file.json").read_text())["inference"]["key"] == server.key


def test_shapes_model_of_our_own_is_served_with_its_labels_and_size(server):
    data, _ = shape_png(label=3)
    r = server.post("shapes_viz", data=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["arch"] == "shapes" and out["weights"] == "file:weights.pt"
    assert out["predictions"][0]["label"] == "cross" and out["predictions"][0]["score"] > 0.9
    layers = {
        entry["name"]: entry["output_shape"]
        for entry in server.post("shapes_viz", json={"mode": "layers"}).json()["layers"]
    }
    assert layers["features.0"] == [12, 64, 64]


def test_gradcam_through_the_server_points_at_the_object(server):
    data, (x0, y0, x1, y1) = shape_png(label=0)
    r = server.post("shapes_viz", files={"data": ("s.png", data)}, data={"mode": "gradcam", "raw": "true"})
    assert r.status_code == 200, r.text
    cam = r.json()["gradcam"]
    assert cam["label"] == "circle" and cam["layer"] == "features"
    raw = raw_array(cam["raw"])
    y, x = np.unravel_index(raw.argmax(), raw.shape)
    assert x0 - 4 <= x <= x1 + 4 and y0 - 4 <= y <= y1 + 4


def test_explanations_endpoint_answers_with_gradcam(server):
    data, _ = shape_png(label=2)
    r = requests.post(f"{server.url}/explanations/shapes_viz", data=data, timeout=60,
                      headers={**server.auth(), "Content-Type": "image/png"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["gradcam"]["label"] == "triangle"


def test_gradcam_png_as_curl_gets_it(server):
    r = server.post("alexnet_viz", files={"data": ("cat.jpg", jpeg())}, data={"mode": "gradcam", "format": "png"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("image/png") and r.content.startswith(PNG)
    from PIL import Image

    from vizserve import render

    # the 224 px crop beside the map over it, under the title (one line, or more for a long label), over the
    # colour bar
    width, height = Image.open(io.BytesIO(r.content)).size
    below = height - (render.TITLE_H + 224 + render.BAR_BAND)
    assert width == 2 * 224 + render.GAP and below >= 0 and below % render.TITLE_LINE == 0


def test_actmax_is_a_job_that_polls_follow_to_the_images(server):
    r, states = server.job("shapes_viz", every=0.2, data={"mode": "actmax", "channel": "circle,square", "steps": "64"})
    assert r.status_code == 200, r.text
    assert states[0]["state"] == "queued" and states[0]["steps"] == 64 and states[0]["estimate_s"] > 0
    assert [e["label"] for e in r.json()["actmax"]] == ["circle", "square"]
    assert all(e["steps"] == 64 and e["end"] > e["start"] for e in r.json()["actmax"])
    again = server.post("shapes_viz", data={"job": states[0]["job"]})
    assert again.status_code == 200 and again.json() == r.json()  # a finished answer stays until it expires


def test_a_job_with_format_png_answers_the_picture(server):
    fields = {"mode": "actmax", "layer": "features.3", "channel": "0-3", "steps": "8", "format": "png"}
    r, _ = server.job("shapes_viz", data=fields)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("image/png") and r.content.startswith(PNG)


def test_stream_is_refused_with_how_to_poll_and_unknown_jobs_are_404(server):
    r = server.post("shapes_viz", data={"mode": "actmax", "channel": "0", "stream": "true"})
    assert r.status_code == 400 and "field 'job'" in r.json()["message"]
    r = server.post("shapes_viz", data={"job": "A" * 22})
    assert r.status_code == 404 and r.json()["type"] == "UnknownJob"


def test_per_mode_metrics_on_the_prometheus_endpoint(server):
    server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"})
    server.post("alexnet_viz", files={"data": ("x.jpg", jpeg())}, data={"mode": "featuremaps,gradcam"})
    server.post("alexnet_viz", files={"data": ("x", b"junk")})
    text = requests.get(f"{server.metrics}/metrics", timeout=30).text
    import re

    def count(mode: str, status: str) -> float:
        pattern = rf'^VizRequests\{{(?=[^}}]*Mode="{mode}")(?=[^}}]*Status="{status}")[^}}]*\}} ([0-9.e+]+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    assert count("classify", "200") >= 2 and count("featuremaps", "200") >= 1 and count("gradcam", "200") >= 1
    assert count("unreadable", "400") >= 1
    assert re.search(r'^VizLatency\{[^}]*Mode="gradcam"[^}]*\} [0-9.]+', text, re.MULTILINE)


def test_client_on_a_folder_saves_every_picture(server, tmp_path):
    import subprocess
    import sys

    photos = tmp_path / "photos"
    shape_folder(photos, 2, 31, stem="s")
    client = Path(__file__).resolve().parents[2] / "clients" / "viz_client.py"
    run = subprocess.run([sys.executable, str(client), str(photos), "--model", "shapes_viz", "--mode",
                          "featuremaps,gradcam", "--url", server.url, f"--token={server.key}", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("== ") == 2 and "shapes_viz (shapes" in run.stdout
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len([n for n in saved if "_featuremaps_" in n]) == 4 and len([n for n in saved if "_gradcam_" in n]) == 4
    bad = subprocess.run([sys.executable, str(client), str(photos / "s0.png"), "--model", "shapes_viz", "--mode",
                          "gradcam", "--layer", "nope", "--url", server.url, f"--token={server.key}"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "HTTP 400: unknown layer 'nope'" in bad.stderr
    expired = subprocess.run([sys.executable, str(client), "--model", "shapes_viz", "--mode", "layers", "--url",
                              server.url, "--token", "stale"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert expired.returncode != 0 and "keys expire" in expired.stderr


def test_client_polls_an_optimization_job_and_saves_the_images(server, tmp_path):
    import subprocess
    import sys

    client = Path(__file__).resolve().parents[2] / "clients" / "viz_client.py"
    run = subprocess.run([sys.executable, str(client), "--model", "shapes_viz", "--mode", "actmax", "--channel",
                          "circle,cross", "--steps", "32", "--poll", "0.2", "--url", server.url,
                          f"--token={server.key}", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "job " in run.stdout and "after 32 steps" in run.stdout
    assert len([p for p in tmp_path.iterdir() if "_actmax_" in p.name]) == 2
