"""A worker killed mid-request, a too-long actmax, and a short load run: the server keeps serving."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import requests

from scripts.load import run_load
from tests.images import jpeg

pytestmark = pytest.mark.integration


def test_a_killed_worker_fails_its_request_and_comes_back(server):
    [pid] = server.worker_pids("resnet18_viz")
    outcome = {}

    def slow():  # SmoothGrad with 64 samples on ResNet18: several seconds of work
        r = server.post("resnet18_viz", files={"data": ("x.jpg", jpeg())},
                        data={"mode": "saliency", "method": "smoothgrad", "samples": "64"})  # fmt: skip
        outcome["status"] = r.status_code

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(1.5)
    psutil.Process(pid).kill()
    others = [server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code
              for _ in range(5)]  # fmt: skip
    thread.join(timeout=120)
    assert outcome["status"] >= 500, outcome  # the request in flight gets an error, not a hang
    assert others == [200] * 5  # other models answer throughout

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            pids = server.worker_pids("resnet18_viz")
            if pids and pids != [pid]:
                r = server.post("resnet18_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"})
                if r.status_code == 200:
                    break
        except requests.RequestException:
            pass
        time.sleep(1)
    else:
        pytest.fail("resnet18_viz did not come back within 90 s")
    assert server.worker_pids("resnet18_viz") != [pid]


def test_a_too_long_actmax_is_cut_by_the_budget_not_by_a_killed_worker(server):
    before = server.worker_pids("shapes_short_viz")
    t0 = time.monotonic()
    r = server.post("shapes_short_viz", data={"mode": "actmax", "channel": "0-5", "steps": "2048", "size": "512"})
    seconds = time.monotonic() - t0
    assert r.status_code == 200, r.text[:300]
    entries = r.json()["actmax"]
    assert all(e["stopped_early"] and e["steps"] < 2048 for e in entries)
    assert seconds < 10  # the budget is 3 s, TorchServe's response timeout 10 s
    assert server.worker_pids("shapes_short_viz") == before


def test_short_load_run_has_no_server_errors_and_flat_memory(server):
    result = run_load(server, "alexnet_viz", jpeg(), total=300, clients=4, max_seconds=240, rss_after=(100, 300))
    summary = result.summary()
    assert result.server_errors == 0, summary
    assert set(summary["statuses"]) <= {200, 400}, summary
    assert result.requests == 300, summary
    early, late = result.rss_mb[100], result.rss_mb[300]
    assert late <= early * 1.05, summary
