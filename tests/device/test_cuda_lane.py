"""The real CUDA lane (``-m gpu``; ``scripts/gpu_check.sh`` runs it): what the fake device cannot show.

Every mode of alexnet, resnet18, shapes and r3d_18 (seeded random weights, nothing downloaded) answers on the GPU;
Grad-CAM and saliency maps equal the CPU's within :data:`TOLERANCE`; an actmax job runs through the job scheduler
and leaves no GPU memory behind; with two GPUs, two services on cuda:0 and cuda:1 agree. Skipped, with the reason,
where CUDA is absent (CI: the fake lane, test_fake_lane.py, runs there instead).
"""

from __future__ import annotations

import gc
import json
import time

import pytest
import torch

from tests.device import lane as L

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is present"),
]

#: The largest difference of a map from the CPU's, relative to the CPU map's largest magnitude, with TF32 off
#: (convolutions in TF32, cuDNN's default, round to 10 bits: about 1e-3 of the map by themselves).
TOLERANCE = 2e-3
#: The maps compared: Grad-CAM and two of its family, and three saliency methods (gradients, a path integral,
#: perturbations); for the video model the two cheapest (its CPU reference takes seconds a pass).
COMPARED = [
    {"mode": "gradcam", "method": "gradcam"},
    {"mode": "gradcam", "method": "gradcam++"},
    {"mode": "gradcam", "method": "layercam"},
    {"mode": "saliency", "method": "vanilla"},
    {"mode": "saliency", "method": "integrated_gradients", "ig_steps": "8"},
    {"mode": "saliency", "method": "occlusion", "window": "0.25"},
]
GPU = torch.device("cuda")


def one(svc, fields):
    [reply] = svc.handle([fields])
    return reply


@pytest.fixture(scope="module", params=L.MODELS)
def pair(request):
    """``(cpu service, gpu service, input)`` of one model, the same weights on both."""
    arch = request.param
    cpu, gpu = L.service_for(arch, torch.device("cpu")), L.service_for(arch, GPU)
    return cpu, gpu, L.input_for(cpu)


@pytest.fixture
def exact_float32():
    """TF32 off for the comparisons (cuDNN's convolutions use it by default on Ampere and later)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_every_mode_answers_on_the_gpu(pair, record_property):
    """200 for every request, except what the model cannot take on any device (400 InvalidOption: LRP of a
    network that reuses a module, as ResNet's ReLUs)."""
    _, gpu, data = pair
    failed, seconds, refused = [], {}, {}
    for fields in L.requests_for(gpu, with_target="1"):
        t0 = time.perf_counter()
        reply = one(gpu, {"data": data, **fields})
        seconds[L.label(fields)] = round(time.perf_counter() - t0, 3)
        if reply.status == 400 and json.loads(reply.body)["type"] == "InvalidOption":
            refused[L.label(fields)] = json.loads(reply.body)["message"][:200]
        elif reply.status != 200:
            failed.append(f"{L.label(fields)}: {reply.status} {reply.body[:200]!r}")
        elif reply.content_type == "application/json":
            assert json.loads(reply.body)["device"].startswith("cuda")
    record_property("seconds", json.dumps(seconds))
    record_property("refused", json.dumps(refused))
    assert not failed, "\n".join(failed)
    assert len(refused) <= 1, refused


def test_maps_equal_the_cpus(pair, exact_float32, record_property):
    cpu, gpu, data = pair
    video = cpu.spec.modality == "video"
    worst = {}
    for fields in COMPARED[:1] + COMPARED[3:4] if video else COMPARED:
        ask = {"data": data, "raw": "true", "target": "1", **fields}
        a, b = one(cpu, ask), one(gpu, ask)
        assert (a.status, b.status) == (200, 200), (a.body[:200], b.body[:200])
        mode = fields["mode"]
        gap, mismatched = L.difference(L.body(a)[mode], L.body(b)[mode])
        assert not mismatched, mismatched
        worst[fields["method"]] = gap
    record_property("max_relative_difference", json.dumps(worst))
    assert max(worst.values()) <= TOLERANCE, worst


def test_automatic_precision_is_bfloat16_where_native(pair):
    _, gpu, _ = pair
    assert gpu.served.bf16 == (torch.cuda.get_device_properties(GPU).major >= 8)
    [reply] = gpu.handle([{"mode": "actmax", "channel": "0-3", "steps": "4", "size": "64"}])
    assert reply.status == 200, reply.body[:300]
    for entry in json.loads(reply.body)["actmax"]:
        assert entry["end"] == entry["end"] and abs(entry["end"]) < 1e6  # finite


# -- jobs, workers, memory -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """AlexNet with seeded random weights, laid out as its archive is."""
    folder = tmp_path_factory.mktemp("alexnet_viz")
    L.archive_folder("alexnet", folder)
    return folder


def wait(svc, job: str, seconds: float = 120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reply = svc.poll(job)
        if reply.status != 202:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"job {job} still running after {seconds} s")


def test_an_actmax_job_runs_through_the_scheduler_and_frees_its_memory(archive, tmp_path, record_property):
    """Two jobs of 16 classes: the first warms up what stays for good (the job thread's cuBLAS workspace lives in
    PyTorch's allocator), the second must leave the allocated memory where it found it."""
    from vizserve import load_service

    threads = torch.get_num_threads()
    svc = load_service(archive, {"jobs": {"dir": str(tmp_path)}}, device=GPU, name="alexnet_viz", jobs=True)
    ask = {"mode": "actmax", "channel": "0-15", "steps": "32", "raw": "true"}
    try:
        readings = []
        for _ in range(2):
            gc.collect()
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            [accepted] = svc.handle([ask])
            assert accepted.status == 202, accepted.body[:300]
            done = wait(svc, json.loads(accepted.body)["job"])
            assert done.status == 200, done.body[:300]
            entries = json.loads(done.body)["actmax"]
            assert len(entries) == 16 and all(not e["stopped_early"] for e in entries)
            assert sum(e["end"] > e["start"] for e in entries) >= 12  # the objective rose for (nearly) every class
            gc.collect()
            torch.cuda.synchronize()
            readings.append({"allocated_before": before, "allocated_after": torch.cuda.memory_allocated(),
                             "reserved_after": torch.cuda.memory_reserved()})  # fmt: skip
        record_property("memory", json.dumps(readings))
        assert readings[1]["allocated_after"] <= readings[1]["allocated_before"]
    finally:
        svc.jobs.stop()
        torch.set_num_threads(threads)


def test_the_handler_serves_on_the_gpu_torchserve_assigns(archive, tmp_path):
    from tests.handler.test_viz_handler import MockContext, load_handler_module

    module = load_handler_module()
    handler = module.VizHandler()
    threads = torch.get_num_threads()
    last = torch.cuda.device_count() - 1
    try:
        ctx = MockContext(archive, {"handler": {"jobs": {"dir": str(tmp_path)}}}, gpu_id=last)
        handler.initialize(ctx)
        assert torch.cuda.current_device() == last
        out = handler.handle([{"data": bytearray(L.input_for(handler.service)), "mode": b"gradcam"}], ctx)
        assert ctx.status[0][0] == 200 and json.loads(out[0])["device"] == f"cuda:{last}"
    finally:
        if handler.service is not None:
            handler.service.jobs.stop()
        torch.set_num_threads(threads)
        torch.cuda.set_device(0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs; this machine has fewer")
def test_two_services_on_two_gpus_agree(exact_float32):
    a = L.service_for("resnet18", torch.device("cuda:0"))
    b = L.service_for("resnet18", torch.device("cuda:1"))
    ask = {"data": L.input_for(a), "mode": "gradcam,saliency", "method": "gradcam,vanilla", "raw": "true",
           "target": "1"}  # fmt: skip
    for _ in range(2):
        x, y = one(a, ask), one(b, ask)
        assert (x.status, y.status) == (200, 200)
        gap, mismatched = L.difference(L.body(x), L.body(y))
        assert not mismatched and gap <= TOLERANCE
