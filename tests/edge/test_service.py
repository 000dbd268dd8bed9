import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.images import jpeg, npy, raw_array
from tests.services import tiny_service
from tests.tiny import Tiny, tiny_input
from vizserve import Limits, smallest_input_side

PNG = b"\x89PNG\r\n\x1a\n"


def make_service(limits=Limits(), model=None):
    return tiny_service(limits, model)


def body(reply):
    assert reply.content_type == "application/json"
    return json.loads(reply.body)


def test_classify_and_featuremaps_hand_computed():
    svc = make_service()
    x = tiny_input()[0].numpy()
    [reply] = svc.handle([{"data": npy(x), "mode": "featuremaps", "raw": "true", "topk": "2"}])
    assert reply.status == 200
    out = body(reply)
    assert out["model"] == "tiny_viz" and out["weights"] == "hand-set" and out["device"] == "cpu"
    assert [p["label"] for p in out["predictions"]] == ["zero", "one"]
    assert out["predictions"][0]["score"] == pytest.approx(np.exp(13) / (np.exp(13) + 2), rel=1e-6)
    [fm] = out["featuremaps"]
    assert fm["layer"] == "features.0" and fm["shape"] == [2, 1, 2]
    assert raw_array(fm["raw"]).tolist() == [[[11.0, 15.0]], [[-12.0, -16.0]]]
    import base64

    assert base64.b64decode(fm["image"]).startswith(PNG)


def test_batch_with_mixed_modes_and_a_bad_request_answers_each_in_order():
    svc = make_service()
    calls = []
    svc.model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    x = npy(tiny_input()[0].numpy())
    items = [
        {"data": x},
        {"body": {"mode": "layers"}},
        {"data": x, "mode": "featuremaps", "layers": "nope"},
        {"data": x, "mode": "featuremaps", "layers": "features.1"},
        {"body": bytearray(jpeg(32, 32))},
        {"data": b"garbage"},
    ]
    replies = svc.handle(items)
    assert [r.status for r in replies] == [200, 200, 400, 200, 200, 400]
    assert "predictions" in body(replies[0]) and "featuremaps" not in body(replies[0])
    assert [layer["name"] for layer in body(replies[1])["layers"]][:2] == ["features", "features.0"]
    assert "predictions" not in body(replies[1])
    assert body(replies[2])["type"] == "UnknownLayer"
    assert body(replies[3])["featuremaps"][0]["shape"] == [2, 1, 2]
    assert body(replies[5]) == {"code": 400, "type": "InvalidInput", "message": body(replies[5])["message"]}
    assert calls == [3]  # the three valid image requests ran as one forward pass


def test_filters_need_no_image_and_format_png_returns_the_first_picture():
    svc = make_service()
    [reply] = svc.handle([{"mode": "filters"}])
    [entry] = body(reply)["filters"]
    assert entry["layer"] == "features.0" and entry["shape"] == [2, 3, 2, 2]
    [png] = svc.handle([{"mode": "filters", "format": "png"}])
    assert png.content_type == "image/png" and png.body.startswith(PNG)
    im = Image.open(io.BytesIO(png.body))
    assert im.mode == "RGB" and im.width >= 48


def test_response_over_the_limit_is_a_413_not_a_broken_worker():
    svc = make_service(Limits(max_response_bytes=200))
    [reply] = svc.handle([{"data": npy(tiny_input()[0].numpy()), "mode": "featuremaps"}])
    assert reply.status == 413
    assert "over this server's limit" in body(reply)["message"]


def test_unexpected_failure_of_one_request_is_its_own_500(monkeypatch):
    from vizserve.modes import MODES

    svc = make_service()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(MODES["featuremaps"], "present", broken)
    x = npy(tiny_input()[0].numpy())
    replies = svc.handle([{"data": x, "mode": "featuremaps"}, {"data": x}])
    assert [r.status for r in replies] == [500, 200]
    assert body(replies[0])["type"] == "InternalError"


def test_inputs_of_different_shapes_run_as_separate_passes():
    svc = make_service()
    small = npy(np.zeros((3, 2, 3), np.float32))
    big = npy(np.zeros((3, 4, 4), np.float32))
    replies = svc.handle([{"data": small}, {"data": big}, {"data": small}])
    assert [r.status for r in replies] == [200, 200, 200]


def test_smallest_input_side_of_alexnet():
    from cnnviz import build_model

    assert smallest_input_side(build_model("alexnet"), (3, 224, 224), torch.device("cpu")) == 63


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is present")
def test_gpu_results_match_cpu():
    cpu = make_service()
    gpu_model = Tiny().to("cuda")
    gpu = tiny_service(model=gpu_model, device=torch.device("cuda"))
    x = {"data": npy(tiny_input()[0].numpy()), "mode": "featuremaps", "raw": "true"}
    a, b = body(cpu.handle([x])[0]), body(gpu.handle([x])[0])
    assert b["device"].startswith("cuda")
    assert raw_array(a["featuremaps"][0]["raw"]).tolist() == raw_array(b["featuremaps"][0]["raw"]).tolist()


def test_describe_answers_the_spec_and_every_mode_with_its_options():
    from vizserve import MODES

    [reply] = make_service().handle([{"mode": "describe"}])
    d = body(reply)["describe"]
    assert d["arch"] == "tiny" and d["input_shape"] == [3, 2, 3] and d["num_classes"] == 3
    assert d["featuremap_layers"] == ["features.0"] and d["cam_layer"] == "features" and d["modality"] == "image"
    assert [m["name"] for m in d["modes"]] == list(MODES)
    modes = {m["name"]: m for m in d["modes"]}
    assert modes["classify"]["options"] == [{"name": "topk", "type": "int", "default": 3, "help": "how many "
        "classes, best first", "min": 1, "max": 1000, "default_text": "5 (or the class count)"}]  # fmt: skip
    assert {o["name"]: o["default"] for o in modes["actmax"]["options"]}["size"] == 3
    assert modes["filters"]["needs_input"] is False and modes["gradcam"]["needs_input"] is True
    # What a client needs to build its controls: every label, and the methods of each attribution mode.
    assert d["labels"] == ["zero", "one", "two"] and d["labels_first"] == d["labels"] and d["input_options"] == []
    methods = {m: {o["name"]: o for o in modes[m]["options"]}["method"]["choices"] for m in ("gradcam", "saliency")}
    assert methods["gradcam"][0] == "gradcam" and "integrated_gradients" in methods["saliency"]
    assert not set(methods["gradcam"]) & set(methods["saliency"])


def test_requests_take_every_core_while_no_job_runs_and_their_share_while_one_does():
    class Jobs:
        running = 0

        def active(self):
            return self.running

    before = torch.get_num_threads()
    svc = tiny_service()
    svc.jobs, svc.request_threads = Jobs(), (3, 1)
    try:
        for running, threads in ((0, 3), (1, 1), (0, 3)):
            svc.jobs.running = running
            [reply] = svc.handle([{"data": jpeg()}])
            assert reply.status == 200 and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
