"""The service and the core on a fake ``cuda:1`` (tests/fakecuda.py): every mode answers exactly as on the CPU.

Device mistakes fail here loudly (a CPU tensor meeting a device one, ``.numpy()`` before ``.cpu()``, a hard-coded
``cuda:0``, a CPU generator for a device draw), in CI, without a GPU. What this cannot see (kernels, real device
memory, streams, speed) is for ``-m gpu`` (test_cuda_lane.py) and ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnviz import GradCAM, Settings, Target, actmax, deletion_insertion, forward, saliency
from tests.device import lane as L
from tests.fakecuda import is_fake
from tests.images import npy, shape_png
from tests.services import motion_service, shapes_model, shapes_service, tiny_service
from tests.tiny import Tiny, tiny_input
from vizserve import Limits

CUDA1 = torch.device("cuda:1")
HANDLER = Path(__file__).resolve().parents[2] / "handlers" / "viz_handler.py"
IMAGE, _ = shape_png(label=1, seed=11, pool=40)  # a square
# a short small clip (the model takes any length and side of at least 4): the same paths, a third of the time
CLIP = npy((np.random.default_rng(0).standard_normal((3, 8, 32, 32)) * 0.25).astype(np.float32))


def one(svc, fields):
    [reply] = svc.handle([fields])
    return reply


def same_answer(cpu, dev, fields):
    a, b = one(cpu, fields), one(dev, fields)
    assert a.status == 200, a.body[:300]
    assert b.status == 200, b.body[:300]
    assert (b.content_type, L.body(b)) == (a.content_type, L.body(a))
    return a, b


@pytest.fixture(scope="module")
def shapes_cpu():
    return shapes_service()


@pytest.fixture(scope="module")
def shapes_dev(lane):
    return shapes_service(device=CUDA1)


@pytest.fixture(scope="module")
def motion_cpu():
    return motion_service()


@pytest.fixture(scope="module")
def motion_dev(lane):
    return motion_service(device=CUDA1)


def test_the_device_service_is_on_cuda1(shapes_dev, lane):
    assert {p.device for p in shapes_dev.model.parameters()} == {CUDA1}
    assert all(is_fake(p) for p in shapes_dev.model.parameters())
    [reply] = shapes_dev.handle([{"data": IMAGE}])
    assert json.loads(reply.body)["device"] == "cuda:1"


@pytest.mark.parametrize("fields", L.image_requests(), ids=L.label)
def test_every_image_mode_answers_on_cuda1_as_on_the_cpu(shapes_cpu, shapes_dev, fields):
    same_answer(shapes_cpu, shapes_dev, {"data": IMAGE, **fields})


@pytest.mark.parametrize("fields", L.video_requests(), ids=L.label)
def test_every_video_mode_answers_on_cuda1_as_on_the_cpu(motion_cpu, motion_dev, fields):
    same_answer(motion_cpu, motion_dev, {"data": CLIP, **fields})


def test_a_batch_of_mixed_requests_on_cuda1(shapes_cpu, shapes_dev):
    items = [{"data": IMAGE}, {"data": IMAGE, "mode": "gradcam,featuremaps"}, {"mode": "filters"},
             {"data": IMAGE, "mode": "saliency", "method": "vanilla,smoothgrad", "samples": "4"},
             {"data": b"junk"}]  # fmt: skip
    a, b = shapes_cpu.handle(items), shapes_dev.handle(items)
    assert [r.status for r in b] == [200, 200, 200, 200, 400]
    assert [L.body(r) for r in b] == [L.body(r) for r in a]


def test_tiny_hand_computed_on_cuda1(lane):
    svc = tiny_service(device=CUDA1)
    [reply] = svc.handle([{"data": npy(tiny_input()[0].numpy()), "mode": "featuremaps", "raw": "true"}])
    fm = json.loads(reply.body)["featuremaps"][0]
    assert L.raw(fm["raw"]).tolist() == [[[11.0, 15.0]], [[-12.0, -16.0]]]


def test_automatic_precision_is_bfloat16_where_the_device_computes_it_natively(lane, shapes_dev):
    from vizserve.modes import MODES
    from vizserve.request import parse_request

    assert shapes_dev.served.bf16
    values = parse_request({"mode": "actmax", "channel": "0", "steps": "2"}, shapes_dev.served).values["actmax"]
    assert MODES["actmax"].settings(shapes_dev.served, values, None, None)["precision"] == "bfloat16"
    [reply] = shapes_dev.handle([{"mode": "actmax", "channel": "0", "steps": "2"}])  # runs under autocast("cuda")
    assert reply.status == 200, reply.body[:300]
    # cuda:1 a T4 (7.5: bfloat16 only emulated, which is_bf16_supported() counts), cuda:0 an H100; the current
    # device is cuda:0, as in a worker that TorchServe gave GPU 1
    lane.capabilities = [(9, 0), (7, 5)]
    try:
        t4, h100 = shapes_service(device=CUDA1), shapes_service(device=torch.device("cuda:0"))
        assert (t4.served.bf16, h100.served.bf16) == (False, True)
        [reply] = t4.handle([{"mode": "actmax", "channel": "0", "steps": "2"}])
        assert reply.status == 200, reply.body[:300]
    finally:
        lane.capabilities = [(9, 0), (9, 0)]


def test_two_services_on_two_devices_in_one_process(lane, shapes_cpu):
    a, b = shapes_service(device=torch.device("cuda:0")), shapes_service(device=CUDA1)
    ask = {"data": IMAGE, "mode": "gradcam,saliency,deconv", "method": "gradcam,vanilla"}
    expected = L.body(one(shapes_cpu, ask))
    for svc in (a, b, a):
        assert L.body(one(svc, ask)) == expected


# -- the core, called directly: the device comes from the inputs --------------------------------------------------


def test_core_functions_take_their_device_from_the_inputs(lane):
    cpu_model, dev_model = shapes_model(), shapes_model().to(CUDA1)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    xd = x.to(CUDA1)
    probs, acts = forward(cpu_model, x, ["features.0"])
    dprobs, dacts = forward(dev_model, xd, ["features.0"])
    assert dprobs.device == CUDA1 and torch.equal(dprobs.cpu(), probs)
    assert torch.equal(dacts["features.0"].cpu(), acts["features.0"])
    cam, dcam = GradCAM(cpu_model, "features")(x), GradCAM(dev_model, "features")(xd)
    assert dcam.cams.device == CUDA1 and torch.equal(dcam.cams.cpu(), cam.cams)
    targets = torch.tensor([1, 2])
    for method in ("vanilla", "smoothgrad", "integrated_gradients", "occlusion"):
        s = saliency(cpu_model, x, targets, method, samples=4, steps=4, window=0.5)
        d = saliency(dev_model, xd, targets.to(CUDA1), method, samples=4, steps=4, window=0.5)
        assert d.device == CUDA1 and torch.equal(d.cpu(), s), method
    f = deletion_insertion(cpu_model, x, cam.cams, targets, steps=4)
    df = deletion_insertion(dev_model, xd, dcam.cams, targets.to(CUDA1), steps=4)
    assert torch.equal(df.deletion.cpu(), f.deletion) and torch.equal(df.insertion_auc.cpu(), f.insertion_auc)
    settings = Settings(size=32, steps=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    r, dr = actmax(cpu_model, [Target("", 1)], settings), actmax(dev_model, [Target("", 1)], settings)
    assert dr.images.device == CUDA1 and torch.equal(dr.images.cpu(), r.images)


def test_timed_work_waits_for_the_device_it_ran_on(lane):
    """A GPU runs kernels after the call that queued them returns: an optimization step (timed for job budgets and
    the calibration) and Score-CAM's paced passes wait for the model's device, named (not the current one, 0)."""
    from cnnviz import Optimization, ScoreCAM
    from cnnviz.objectives import Objective

    model = shapes_model().to(CUDA1)
    settings = Settings(size=32, steps=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    lane.syncs.clear()
    opt = Optimization(model, 1, Objective(model, [Target("", 1)]), settings)
    assert lane.syncs == [1]  # the set-up
    opt.step()
    opt.step()
    opt.finish(False)
    assert lane.syncs == [1, 1, 1]
    lane.syncs.clear()
    ScoreCAM(model, "features", deadline=time.monotonic() + 60)(torch.rand(1, 3, 64, 64).to(CUDA1))
    assert lane.syncs and set(lane.syncs) == {1}


# -- loading, the handler and jobs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """The shapes model laid out as its archive is (spec.json, model.py, weights.pt)."""
    folder = tmp_path_factory.mktemp("shapes_viz")
    L.archive_folder("shapes", folder)
    return folder


def poll_until_done(svc, job: str, seconds: float = 60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        [reply] = svc.handle([{"job": job}])
        if reply.status != 202:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"job {job} still running after {seconds} s")


def load_handler_module():
    spec = importlib.util.spec_from_file_location("viz_handler_lane", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    """The part of TorchServe's Context the handler reads at initialize, with the GPU TorchServe assigned."""

    def __init__(self, model_dir, gpu_id, job_dir):
        self.model_name = "shapes_viz"
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 4}
        self.model_yaml_config = {"handler": {"jobs": {"dir": str(job_dir)}}}
        self.status, self.content_type = {}, {}

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value

    def set_response_header(self, idx, key, value):
        pass

    def get_request_header(self, idx, key):
        return None


@pytest.fixture(scope="module")
def handler(lane, shapes_dir, tmp_path_factory):
    """The TorchServe handler initialized as a worker that TorchServe gave GPU 1 (it loads and calibrates there)."""
    threads = torch.get_num_threads()
    module = load_handler_module()
    handler = module.VizHandler()
    jobs = tmp_path_factory.mktemp("jobs")
    handler.initialize(Context(shapes_dir, 1, jobs))
    yield handler, module, jobs
    if handler.service is not None and handler.service.jobs is not None:
        handler.service.jobs.stop()
    torch.set_num_threads(threads)


def test_the_handler_serves_on_the_gpu_torchserve_assigns(handler, shapes_dir):
    handler, module, jobs = handler
    assert module.select_device(1) == CUDA1 and module.select_device(None) == torch.device("cpu")
    assert {p.device for p in handler.service.model.parameters()} == {CUDA1}
    assert torch.cuda.current_device() == 1  # what uses the current device lands on the worker's own GPU
    ctx = Context(shapes_dir, 1, jobs)
    out = handler.handle([{"data": bytearray(IMAGE), "mode": b"gradcam"}, {"body": bytearray(b"nope")}], ctx)
    assert ctx.status == {0: 200, 1: 400}
    assert json.loads(out[0])["device"] == "cuda:1"


def test_a_job_runs_on_the_device_of_its_worker_and_frees_what_it_used(lane, handler, shapes_cpu, shapes_dir):
    handler, _, jobs = handler
    ask = {"mode": "actmax", "channel": "0-1", "steps": "3", "precision": "float32", "raw": "true"}
    gc.collect()
    before, emptied = torch.cuda.memory_allocated(1), lane.empty_cache_calls
    ctx = Context(shapes_dir, 1, jobs)
    [accepted] = handler.handle([{k: v.encode() for k, v in ask.items()}], ctx)
    assert ctx.status[0] == 202, accepted[:300]
    done = poll_until_done(handler.service, json.loads(accepted)["job"])
    assert done.status == 200, done.body[:300]
    assert L.body(done) == L.body(one(shapes_cpu, ask))  # exactly the CPU's answer, in the request
    gc.collect()
    assert torch.cuda.memory_allocated(1) == before  # nothing of the job stays on the device
    assert lane.empty_cache_calls > emptied  # and its cached blocks went back for the GPU's other workers


def test_the_job_thread_runs_on_the_workers_device(handler):
    """CUDA's current device is per thread, and a new thread's is cuda:0."""
    from vizserve.jobs import Outcome

    class Probe:
        steps, done, reserve_s, first_step_s = 1, 0, 0.0, 0.01
        seen: list[int] = []

        def step(self):
            self.seen.append(torch.cuda.current_device())
            self.done = 1

        def finish(self, stopped_early):
            return Outcome(200, "application/json", b"{}")

        def progress(self):
            return {}

        def preview(self):
            return None

        def close(self):
            pass

    scheduler = handler[0].service.jobs
    state = scheduler.submit(Probe(), {"mode": "probe"})
    end = time.monotonic() + 30
    while scheduler.poll(state["job"]).status == 202 and time.monotonic() < end:
        time.sleep(0.02)
    assert Probe.seen == [1]


def test_requests_leave_no_device_memory_behind(lane):
    svc = shapes_service(device=CUDA1)
    requests = [{"data": IMAGE, "mode": "featuremaps,gradcam,deconv"}, {"mode": "filters"},
                {"data": IMAGE, "mode": "saliency", "method": "vanilla,deeplift,integrated_gradients", "ig_steps": "4"},
                {"mode": "actmax", "channel": "0", "steps": "2", "size": "32"}]  # fmt: skip
    svc.handle(requests)  # caches that legitimately stay (per-model probes) are made by the first round
    gc.collect()
    before = torch.cuda.memory_allocated(1)
    for _ in range(2):
        assert all(r.status == 200 for r in svc.handle(requests))
    gc.collect()
    assert torch.cuda.memory_allocated(1) == before


def test_tiny_model_input_on_the_wrong_device_is_caught(lane):
    """A sanity check of the lane itself, through the service: a model left on the CPU while the service says
    cuda:1 fails loudly (500), as it would on a real GPU."""
    svc = tiny_service(model=Tiny(), device=torch.device("cpu"))
    svc.served.device = CUDA1  # the mistake: the model stayed where it was
    [reply] = svc.handle([{"data": npy(tiny_input()[0].numpy())}])
    assert reply.status == 500


def test_limits_are_the_same_on_the_device(lane):
    svc = shapes_service(Limits(max_perturbations=4), device=CUDA1)
    [reply] = svc.handle([{"data": IMAGE, "mode": "saliency", "method": "occlusion"}])
    assert reply.status == 413
