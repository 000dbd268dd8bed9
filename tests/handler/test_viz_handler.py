"""The TorchServe handler with a mock context, on an archive folder laid out as torch-model-archiver does."""

import importlib.util
import inspect
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from cnnviz import random_state_dict, torchvision_spec
from tests.images import jpeg

HANDLER = Path(__file__).resolve().parents[2] / "handlers" / "viz_handler.py"


def load_handler_module():
    spec = importlib.util.spec_from_file_location("viz_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class MockContext:
    """What TorchServe's Context offers a handler, recording the per-request status and content type."""

    def __init__(self, model_dir, yaml_config, gpu_id=None, headers=None):
        self.model_name = "resnet18_viz"
        self.headers = headers or {}
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 8}
        self.model_yaml_config = yaml_config
        self.manifest = {"model": {"modelName": "resnet18_viz"}}
        self.status, self.content_type, self.response_headers = {}, {}, {}

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value

    def set_response_header(self, idx, key, value):
        self.response_headers.setdefault(idx, {})[key] = value

    def get_request_header(self, idx, key):
        return self.headers.get(idx, {}).get(key)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("resnet18_viz")
    torch.save(random_state_dict("resnet18", seed=0), d / "weights.pt")
    (d / "spec.json").write_text(json.dumps(torchvision_spec("resnet18", weights="random").to_dict()))
    return d


@pytest.fixture(scope="module", autouse=True)
def job_dir(tmp_path_factory):
    threads = torch.get_num_threads()  # initialize() splits the cores between its thread and the job thread
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("jobs")
        mp.setenv("VIZ_JOB_DIR", str(folder))
        yield folder
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def handler(model_dir):
    module = load_handler_module()
    h = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__][0]()
    cfg = {"batchSize": 8, "handler": {"arch": "resnet18", "weights": "random", "weights_file": "weights.pt"}}
    h.initialize(MockContext(model_dir, cfg))
    return h


def test_module_defines_exactly_one_class_as_torchserve_requires():
    module = load_handler_module()
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    assert [c.__name__ for c in classes] == ["VizHandler"]


def test_batch_answers_in_order_with_per_request_status(handler, model_dir):
    ctx = MockContext(model_dir, {})
    data = [
        {"body": bytearray(jpeg())},
        {"data": bytearray(jpeg()), "mode": bytearray(b"featuremaps"), "layers": bytearray(b"layer9")},
        {"data": bytearray(jpeg()), "mode": bytearray(b"featuremaps"), "format": bytearray(b"png")},
        {"body": {"mode": "layers"}},
    ]
    out = handler.handle(data, ctx)
    assert len(out) == 4
    assert [ctx.status[i][0] for i in range(4)] == [200, 400, 200, 200]
    assert ctx.status[1][1] == "Bad Request"
    assert [ctx.content_type[i] for i in range(4)] == ["application/json"] * 2 + ["image/png", "application/json"]
    first = json.loads(out[0])
    assert first["model"] == "resnet18_viz" and first["weights"] == "random" and first["device"] == "cpu"
    assert len(first["predictions"]) == 5
    assert [p["score"] for p in first["predictions"]] == sorted(
        (p["score"] for p in first["predictions"]), reverse=True
    )
    error = json.loads(out[1])
    assert error["type"] == "UnknownLayer" and "layer4.1.conv2" in error["message"]
    assert out[2][:8] == b"\x89PNG\r\n\x1a\n"
    names = [layer["name"] for layer in json.loads(out[3])["layers"]]
    assert "layer4.1.conv2" in names and len(names) == len(dict(handler.service.model.named_modules())) - 1


def test_handler_works_with_torchserves_own_context(handler, model_dir):
    ts_context = pytest.importorskip("ts.context")
    ctx = ts_context.Context("resnet18_viz", str(model_dir), {}, 8, None, "0.12.0")
    ctx.request_processor = [ts_context.RequestProcessor({}), ts_context.RequestProcessor({})]
    out = handler.handle([{"body": bytearray(jpeg())}, {"body": bytearray(b"nope")}], ctx)
    assert ctx.get_response_status(0) == (200, "OK")
    assert ctx.get_response_status(1)[0] == 400
    assert ctx.get_response_content_type(1) == "application/json"
    assert json.loads(out[1])["type"] == "InvalidInput"


def test_model_stays_in_eval_mode_and_without_hooks(handler, model_dir):
    for _ in range(20):
        handler.handle([{"data": bytearray(jpeg()), "mode": b"featuremaps"}], MockContext(model_dir, {}))
    model = handler.service.model
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_device_comes_from_the_context_gpu_id(monkeypatch):
    module = load_handler_module()
    assert module.select_device(None).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.select_device(1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert module.select_device(1) == torch.device("cuda:1")
    assert module.select_device("3") == torch.device("cuda:3")
    assert module.select_device(None) == torch.device("cpu")


def test_missing_weights_file_fails_initialize_loudly(model_dir, tmp_path):
    shutil.copy(model_dir / "spec.json", tmp_path)
    module = load_handler_module()
    cfg = {"handler": {"arch": "resnet18", "weights": "random", "weights_file": "weights.pt"}}
    with pytest.raises(FileNotFoundError):
        module.VizHandler().initialize(MockContext(tmp_path, cfg))


def test_explanations_header_adds_gradcam(handler, model_dir):
    ctx = MockContext(model_dir, {}, headers={0: {"explain": "True"}})
    out = handler.handle([{"body": bytearray(jpeg())}, {"body": bytearray(jpeg())}], ctx)
    first, second = json.loads(out[0]), json.loads(out[1])
    assert first["gradcam"]["layer"] == "layer4" and first["gradcam"]["method"] == "gradcam"
    assert "gradcam" not in second


def test_per_mode_metrics_are_recorded(handler, model_dir):
    class Metrics:
        def __init__(self):
            self.counts, self.times = [], []

        def add_counter(self, name, value, idx, dimensions):
            self.counts.append((name, value, idx, {d.name: d.value for d in dimensions}))

        def add_time(self, name, value, idx, unit, dimensions, metric_type):
            self.times.append((name, unit, idx, {d.name: d.value for d in dimensions}))

    ctx = MockContext(model_dir, {})
    ctx.metrics = Metrics()
    ctx.get_request_id = lambda idx: f"req-{idx}"
    handler.handle([{"body": bytearray(jpeg())}, {"body": bytearray(b"junk")}], ctx)
    assert ctx.metrics.counts == [
        ("VizRequests", 1, "req-0", {"Mode": "classify", "Status": "200"}),
        ("VizRequests", 1, "req-1", {"Mode": "unreadable", "Status": "400"}),
    ]
    assert [(name, unit, idx, dims["Mode"]) for name, unit, idx, dims in ctx.metrics.times] == [
        ("VizLatency", "ms", "req-0", "classify"),
        ("VizLatency", "ms", "req-1", "unreadable"),
    ]


def test_model_config_overrides_the_specs_default_layers(model_dir):
    module = load_handler_module()
    h = module.VizHandler()
    cfg = {
        "handler": {"weights_file": "weights.pt", "spec": {"cam_layer": "layer3", "featuremap_layers": "layer1,layer2"}}
    }
    h.initialize(MockContext(model_dir, cfg))
    ctx = MockContext(model_dir, {}, headers={0: {"explain": "True"}})
    [out] = h.handle([{"data": bytearray(jpeg()), "mode": b"featuremaps"}], ctx)
    out = json.loads(out)
    assert out["gradcam"]["layer"] == "layer3"
    assert [f["layer"] for f in out["featuremaps"]] == ["layer1", "layer2"]


def test_an_optimization_is_a_job_that_a_poll_follows_to_its_answer(handler, model_dir, job_dir):
    ctx = MockContext(model_dir, {})
    fields = {"mode": b"actmax", "channel": b"tabby", "steps": b"3", "size": b"64"}
    [accepted] = handler.handle([fields], ctx)
    assert ctx.status[0][0] == 202, accepted
    job = json.loads(accepted)["job"]
    assert (job_dir / "resnet18_viz" / f"{job}.json").exists()
    deadline = time.monotonic() + 60
    while True:
        ctx = MockContext(model_dir, {})
        [out] = handler.handle([{"job": job.encode()}], ctx)
        if ctx.status[0][0] != 202 or time.monotonic() > deadline:
            break
        assert json.loads(out)["state"] in ("queued", "running")
        time.sleep(0.2)
    assert ctx.status[0] == (200, "OK") and ctx.content_type[0] == "application/json"
    [entry] = json.loads(out)["actmax"]
    assert entry["label"] == "tabby" and entry["steps"] == 3


def test_a_full_queue_answers_429_with_retry_after(model_dir, tmp_path):
    jobs = {"max_jobs": 1, "max_queued": 2, "dir": str(tmp_path)}  # a queue of its own: no other test's jobs in it
    cfg = {"handler": {"arch": "resnet18", "weights": "random", "jobs": jobs}}
    handler = load_handler_module().VizHandler()
    handler.initialize(MockContext(model_dir, cfg))
    try:
        ctx = MockContext(model_dir, {})
        many = [{"mode": b"actmax", "channel": b"1", "steps": b"20", "size": b"32"}] * 5
        out = handler.handle(many, ctx)
        statuses = [ctx.status[i][0] for i in range(5)]
        # two wait in the queue (and at most one was taken from it meanwhile: a worker looks every 0.5 s)
        assert statuses[:2] == [202, 202] and statuses[3:] == [429, 429], (statuses, [json.loads(o) for o in out])
        body = json.loads(out[4])
        assert body["type"] == "TooManyJobs" and "max_queued" in body["message"]
        assert int(ctx.response_headers[4]["Retry-After"]) >= 1
        for o, status in zip(out, statuses, strict=True):
            if status == 202:
                poll = MockContext(model_dir, {})
                handler.handle([{"job": json.loads(o)["job"].encode()}], poll)
                assert poll.status[0][0] in (200, 202)
    finally:
        handler.service.jobs.stop()  # not run to the end here


def test_the_cores_are_split_between_the_request_and_the_job_thread():
    from vizserve import JobSettings
    from vizserve.loading import split_threads

    assert split_threads(JobSettings(), cores=2) == (1, 1)
    assert split_threads(JobSettings(), cores=16) == (8, 8)
    assert split_threads(JobSettings(threads=3), cores=16) == (3, 13)
    assert split_threads(JobSettings(), cores=1) == (1, 1)
