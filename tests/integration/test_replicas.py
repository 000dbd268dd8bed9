"""Two TorchServe servers ("replicas") sharing one real redis-server (``VIZ_JOB_STORE``), each pinned to a core of
its own (``taskset``) so that they behave like two machines: any replica answers any job with the same bytes and
cancels it; a worker killed with SIGKILL has its job finished elsewhere with all its steps, polls answering 202
meanwhile; Redis stopped for 10 s leaves fast modes answering and jobs answering 503 with Retry-After, and the jobs
go on when it is back; clients/every_class.py spreads a model's classes over both replicas.

The redis-server is Debian's package (``scripts/setup.sh --dev`` installs it); where it is missing the module is
skipped and says so. One TorchServe start per replica, shapes_viz only, for the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import requests

from scripts.local_torchserve import ROOT, Server, local_torchserve
from tests.images import shape_png
from tests.redisserver import MISSING, RedisServer

pytestmark = pytest.mark.integration
MODEL = "shapes_viz"
CLIENT = ROOT / "clients" / "every_class.py"
# 6 classes at 256 px: a step of about 0.2 to 0.3 s on one core here, so that a job of tens of steps outlives a
# checkpoint (every 5 s) and a lease (15 s)
LONG = {"mode": "actmax", "channel": "0-5", "size": "256"}


@dataclass
class Cluster:
    redis: RedisServer
    a: Server
    b: Server

    @property
    def replicas(self) -> tuple[Server, Server]:
        return self.a, self.b

    def owner(self, pid: int) -> Server:
        [server] = [s for s in self.replicas if pid in s.worker_pids(MODEL)]
        return server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip(MISSING)
    work = tmp_path_factory.mktemp("replicas")
    subprocess.run([str(ROOT / "archive.sh"), "--out", str(work / "store"), "shapes"], check=True, timeout=600)
    cores = sorted(os.sched_getaffinity(0))
    # one core, or no taskset (util-linux): both share what there is
    pins = [[cores[0]], [cores[1]]] if len(cores) >= 2 and shutil.which("taskset") else [None, None]
    redis = RedisServer(work / "redis")
    redis.start()
    try:
        with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
            starts = []
            for name, cpus in zip("ab", pins, strict=True):
                (work / name).mkdir()
                cm = local_torchserve(work / "store", [f"{MODEL}.mar"], work / name, env={"VIZ_JOB_STORE": redis.url},
                                      cpus=cpus)  # fmt: skip
                starts.append(pool.submit(stack.enter_context, cm))  # both at once: each on its own core
            a, b = (f.result() for f in starts)
            yield Cluster(redis, a, b)
    finally:
        redis.stop()


def submit(server: Server, **fields) -> dict:
    r = server.post(MODEL, data=fields)
    assert r.status_code == 202, r.text[:300]
    return r.json()


def poll(server: Server, job: str, **more) -> requests.Response:
    return server.post(MODEL, data={"job": job, **more})


def wait_for(server: Server, job: str, done, timeout: float = 120) -> dict:
    """Poll ``job`` on ``server`` until ``done(state)``; the state."""
    deadline = time.monotonic() + timeout
    while True:
        r = poll(server, job)
        assert r.status_code == 202, r.text[:300]
        state = r.json()
        if done(state):
            return state
        assert time.monotonic() < deadline, f"job {job} did not get there: {state}"
        time.sleep(0.2)


def answer(cluster: Cluster, job: str, timeout: float = 180) -> tuple[requests.Response, list[int]]:
    """Poll ``job`` on both replicas in turn until it is answered; the answer and every status polled."""
    statuses, deadline = [], time.monotonic() + timeout
    while True:
        for server in cluster.replicas:
            r = poll(server, job)
            statuses.append(r.status_code)
            if r.status_code != 202:
                other = poll(cluster.b if server is cluster.a else cluster.a, job)
                assert other.status_code == r.status_code and other.content == r.content  # the same bytes
                return r, statuses
        assert time.monotonic() < deadline, f"job {job} not answered in {timeout} s"
        time.sleep(0.3)


def test_any_replica_answers_and_cancels_any_job_with_the_same_bytes(cluster):
    a, b = cluster.replicas
    first = submit(a, mode="actmax", channel="0", steps="16")
    r, statuses = answer(cluster, first["job"])
    assert r.status_code == 200 and set(statuses) <= {200, 202}
    entry = r.json()["actmax"][0]
    assert entry["steps"] == 16 and not entry["stopped_early"] and entry["label"] == "circle"
    assert "job" not in r.json()  # no takeover: nothing to report

    job = submit(b, **LONG, steps="400")["job"]
    state = wait_for(a, job, lambda s: s["state"] == "running" and s["step"] >= 2)
    assert state["pid"] in a.worker_pids(MODEL) + b.worker_pids(MODEL)  # a worker of either replica runs it
    for _ in range(20):  # a progress write between the two polls of A changes the state: look again
        one, other, again = poll(a, job), poll(b, job), poll(a, job)
        if one.content == again.content:
            break
    assert one.status_code == other.status_code == 202 and other.content == one.content  # the same bytes

    elsewhere = b if cluster.owner(state["pid"]) is a else a
    out = poll(elsewhere, job, cancel="true")  # cancelled on the replica whose worker does not run it
    assert out.status_code == 202 and out.json()["cancel"] == "requested"
    r, statuses = answer(cluster, job, timeout=60)
    assert r.status_code == 200 and set(statuses) <= {200, 202}
    entries = r.json()["actmax"]
    assert len(entries) == 6 and all(e["stopped_early"] and e["steps"] < 400 for e in entries)
    assert poll(b, job, cancel="true").content == r.content  # too late: the answer


def test_a_killed_workers_job_is_finished_elsewhere_with_all_its_steps(cluster):
    a, b = cluster.replicas
    job = submit(a, **LONG, steps="48")["job"]
    other = submit(b, mode="actmax", channel="0-1", size="128", steps="64")["job"]  # beside it: not lost either
    # past its first checkpoint (5 s after it was claimed): the takeover resumes from there
    state = wait_for(b, job, lambda s: s["state"] == "running" and s["compute_s"] > 6.5)
    victim, owner = state["pid"], cluster.owner(state["pid"])
    survivor = b if owner is a else a
    os.kill(victim, signal.SIGKILL)
    seen, statuses, restarted = [state], [], None
    deadline = time.monotonic() + 150
    while True:
        r = poll(survivor, job)
        statuses.append(r.status_code)
        if r.status_code != 202 or time.monotonic() > deadline:
            break
        seen.append(r.json())
        if restarted is None and victim not in owner.worker_pids(MODEL):
            # TorchServe saw its worker die: a poll there waits for the new worker, then answers as the other does
            # (before it saw, TorchServe would hand the poll to the dead worker and answer it 507 "Worker died.")
            restarted = poll(owner, job)
        time.sleep(0.3)
    assert all(s == 202 for s in statuses[:-1]) and statuses[-1] == 200, statuses  # never a 5xx meanwhile
    assert restarted is not None and restarted.status_code in (200, 202), restarted.text[:300]
    again = poll(owner, job)
    assert again.status_code == 200 and again.content == r.content  # the same answer on both
    body = r.json()
    assert all(e["steps"] == 48 and not e["stopped_early"] for e in body["actmax"]), body["actmax"]
    resumed = [s for s in seen if s["resumed"] == 1]
    assert resumed and body["job"]["resumed"] == 1, [(s["pid"], s["step"], s["resumed"]) for s in seen]
    assert all(s["pid"] != victim for s in resumed)  # the other replica, or the killed one's new worker
    before = max(s["step"] for s in seen if s["resumed"] == 0)  # what the killed worker had reported
    redone = body["job"]["redone_steps"]
    # the checkpoint it resumed from is at step before - redone (0 redone: killed right after a checkpoint)
    assert 0 <= redone <= before and resumed[0]["step"] >= before - redone, (redone, before, resumed[0]["step"])

    r, _ = answer(cluster, other)
    assert r.status_code == 200 and all(e["steps"] == 64 and not e["stopped_early"] for e in r.json()["actmax"])


def test_redis_stopped_for_10_s_fast_modes_answer_jobs_answer_503_and_go_on_when_it_is_back(cluster):
    a, b = cluster.replicas
    png, _ = shape_png(0)
    job = submit(a, **LONG, steps="72")["job"]
    before = wait_for(b, job, lambda s: s["state"] == "running" and s["step"] >= 2)
    cluster.redis.kill()  # SIGKILL: every write was on disk before it was acknowledged (appendfsync always)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            for server in cluster.replicas:
                r = server.post(MODEL, files={"data": ("shape.png", png)})
                assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "circle", r.text[:300]
            for r in (a.post(MODEL, data={**LONG, "steps": "8"}), poll(b, job), poll(a, job, cancel="false")):
                assert r.status_code == 503 and r.json()["type"] == "StoreDown", r.text[:300]
                assert int(r.headers["Retry-After"]) >= 1
            time.sleep(1)
    finally:
        cluster.redis.start()  # the same port, the same data
    after = wait_for(a, job, lambda s: s["step"] > before["step"] + 5, timeout=30)  # it went on meanwhile
    assert after["resumed"] == 0 and after["pid"] == before["pid"]  # no takeover: its worker kept it
    later = submit(b, mode="actmax", channel="1", steps="16")["job"]
    for j, steps in ((job, 72), (later, 16)):
        r, statuses = answer(cluster, j)
        assert r.status_code == 200 and set(statuses) <= {200, 202}
        assert all(e["steps"] == steps and not e["stopped_early"] for e in r.json()["actmax"])
        assert "job" not in r.json()


def test_every_class_spreads_the_classes_over_both_replicas(cluster, tmp_path):
    a, b = cluster.replicas
    out = tmp_path / "classes"
    cmd = [sys.executable, str(CLIENT), "--model", MODEL, "--servers", f"{a.url},{b.url}", f"--token={a.key},{b.key}",
           "--out", str(out), "--batch", "1", "--steps", "48", "-o", "size=128", "--poll", "0.2"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["done"] == 6 and all(e["steps"] == 48 and not e["stopped_early"] for e in m["classes"])
    assert len({e["job"] for e in m["classes"]}) == 6
    workers = {int(e["worker"].rsplit(":", 1)[1]) for e in m["classes"] if "worker" in e}
    ran = {s.url for s in cluster.replicas if workers & set(s.worker_pids(MODEL))}
    assert ran == {a.url, b.url}, (workers, m["classes"])  # whichever replica had a free slot took the next
