"""A worker killed while it runs a job, a too-long actmax, classify beside a running optimization, and a short load
run: the server keeps serving, and loses no job."""

from __future__ import annotations

import time

import psutil
import pytest
import requests

from scripts.load import run_load
from tests.images import jpeg

pytestmark = pytest.mark.integration


def test_a_killed_workers_job_is_finished_by_the_worker_that_replaces_it(server):
    """SmoothGrad with 64 samples on ResNet18 (seconds of compute: a job), its worker killed while it runs: the
    other models answer throughout, TorchServe starts a new worker, and that worker takes the job over from the
    model's job folder (its lock died with the old one) and answers it, saying it was resumed."""
    [pid] = server.worker_pids("resnet18_viz")
    first = server.post("resnet18_viz", files={"data": ("x.jpg", jpeg())},
                        data={"mode": "saliency", "method": "smoothgrad", "samples": "64"})  # fmt: skip
    assert first.status_code == 202, first.text[:300]
    job = first.json()["job"]
    deadline = time.monotonic() + 60
    while server.post("resnet18_viz", data={"job": job}).json().get("state") != "running":
        assert time.monotonic() < deadline, "the job did not start within 60 s"
        time.sleep(0.2)
    psutil.Process(pid).kill()
    others = [server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code
              for _ in range(5)]  # fmt: skip
    assert others == [200] * 5  # other models answer throughout

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # TorchServe answers 507 to what it hands a worker that just died: wait
        try:
            pids = server.worker_pids("resnet18_viz")
            if pids and pids != [pid]:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    else:
        pytest.fail("resnet18_viz did not come back within 90 s")
    deadline = time.monotonic() + 180
    while (r := server.post("resnet18_viz", data={"job": job})).status_code == 202:
        assert time.monotonic() < deadline, "the job was not finished within 180 s of the new worker"
        time.sleep(1)
    assert r.status_code == 200, r.text[:300]
    out = r.json()
    assert out["saliency"]["method"] == "smoothgrad" and out["job"]["resumed"] == 1
    assert server.post("resnet18_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_a_too_long_actmax_is_refused_with_its_estimate_or_cut_by_the_budget(server):
    before = server.worker_pids("shapes_short_viz")
    fields = {"mode": "actmax", "channel": "0-5", "steps": "2048", "size": "512"}
    refused = server.post("shapes_short_viz", data=fields)
    assert refused.status_code == 422, refused.text[:300]
    out = refused.json()
    assert out["type"] == "OverBudget" and out["estimate_s"] > out["limit_s"] == 9 and out["budget_s"] == 3
    # up to 3x the budget it runs, and stops early with what it has (the most steps that fit, at the largest size
    # where one does)
    for size in ("512", "256", "128", "64"):
        probe = server.post("shapes_short_viz", data=dict(fields, size=size)).json()
        if probe.get("max_steps", 0) >= 1:
            break
    t0 = time.monotonic()
    r, states = server.job("shapes_short_viz", data=dict(fields, size=size, steps=str(probe["max_steps"])))
    seconds = time.monotonic() - t0
    assert r.status_code == 200, r.text[:300]
    entries = r.json()["actmax"]
    assert all(e["stopped_early"] or e["steps"] == probe["max_steps"] for e in entries)
    assert all(e["seconds"] < 3 + 1 for e in entries)  # the budget: 3 s of compute, the final encoding in it
    assert seconds < 3 + 10  # the compute budget is 3 s (TorchServe's response timeout, 10 s, is never reached)
    assert server.worker_pids("shapes_short_viz") == before


def test_classify_answers_in_time_while_optimizations_run(server):
    """The isolation: fast modes never wait behind an optimization."""
    before = server.worker_pids("alexnet_viz")
    fields = {"mode": "actmax", "layer": "features.10", "channel": "0-7", "steps": "48"}
    first = server.post("alexnet_viz", data=fields)
    assert first.status_code == 202, first.text[:300]
    job = first.json()["job"]
    latencies = []
    for _ in range(10):
        t0 = time.monotonic()
        r = server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"})
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200
        state = server.post("alexnet_viz", data={"job": job}).json()
        time.sleep(0.3)
    assert state["state"] == "running" and state["step"] >= 1, state
    assert max(latencies) < 1.0, latencies
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        r = server.post("alexnet_viz", data={"job": job})
        if r.status_code != 202:
            break
        time.sleep(1)
    assert r.status_code == 200 and len(r.json()["actmax"]) == 8
    assert server.worker_pids("alexnet_viz") == before


def test_short_load_run_has_no_server_errors_and_flat_memory(server):
    result = run_load(server, "alexnet_viz", jpeg(), total=300, clients=4, max_seconds=240, rss_after=(100, 300))
    summary = result.summary()
    assert result.server_errors == 0, summary
    # a 202: the cost model made a request a job (a batch of several gradient modes over its inline budget); every
    # such job answers 200, and there are few of them (the mix has no heavy request)
    assert set(summary["statuses"]) <= {200, 202, 400}, summary
    assert summary["job_statuses"] == ({200: summary["statuses"][202]} if 202 in summary["statuses"] else {}), summary
    assert summary["statuses"].get(202, 0) <= 15, summary
    assert result.requests == 300, summary
    early, late = result.rss_mb[100], result.rss_mb[300]
    assert late <= early * 1.05, summary
