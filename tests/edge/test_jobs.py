"""The job scheduler with fake work and a fake clock: fair interleaving, budgets with projected step times, expiry,
bounds, state on disk, lost jobs."""

import json
import os
import subprocess
import sys

import pytest

from cnnviz import InvalidOption
from vizserve.jobs import JOB_ID, Busy, JobLimits, JobScheduler, JobStore, Outcome


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class FakeWork:
    """Steps that take ``cost`` seconds of the fake clock; the first unit is a set-up of ``setup`` seconds."""

    def __init__(self, clock, name, steps=10, cost=1.0, setup=0.0, reserve=0.5, finish_cost=0.5, fail_at=None):
        self.clock, self.name, self.steps, self.cost, self.setup = clock, name, steps, cost, setup
        self.reserve_s, self.first_step_s, self.finish_cost, self.fail_at = reserve, cost, finish_cost, fail_at
        self.done, self.started, self.closed, self.log = 0, False, False, []

    def step(self):
        if not self.started:
            self.started = True
            self.clock.t += self.setup
            return
        if self.fail_at == self.done:
            raise self.fail_with
        self.clock.t += self.cost
        self.done += 1
        self.log.append(self.done)

    def finish(self, stopped_early):
        self.clock.t += self.finish_cost
        body = {"name": self.name, "steps": self.done, "stopped_early": stopped_early}
        return Outcome(200, "application/json", json.dumps(body).encode())

    def progress(self):
        return {"objective": [self.done]}

    def preview(self):
        return b"PNG"

    def close(self):
        self.closed = True


def scheduler(tmp_path, clock=None, wall=None, **limits):
    clock = clock or Clock()
    limits = JobLimits(**{"compute_seconds": 100.0, "wall_seconds": 1000.0, **limits})
    sched = JobScheduler(JobStore(tmp_path, limits), limits, thread=False, clock=clock, wall=wall or clock)
    return sched, clock


def run_all(sched, limit=10_000):
    n = 0
    while sched.run_once():
        n += 1
        assert n < limit


def test_jobs_are_interleaved_least_compute_first(tmp_path):
    sched, clock = scheduler(tmp_path)
    order = []
    works = [FakeWork(clock, name, steps=6, cost=cost) for name, cost in (("a", 1.0), ("b", 2.0), ("c", 0.5))]
    ids = [sched.submit(w, {"mode": "fake"})["job"] for w in works]
    assert all(JOB_ID.fullmatch(i) for i in ids) and len(set(ids)) == 3
    for w in works:  # record which job each unit went to
        w.step = (lambda orig, name: lambda: (order.append(name), orig())[1])(w.step, w.name)
    while sched.active() == 3:
        sched.run_once()
        used = sorted(j.compute for j in sched._jobs.values())
        assert used[-1] - used[0] <= 2.0  # never more than one step apart (the longest step is 2 s)
    # the cheap job got more steps for the same compute: fair in time, not in steps
    assert order.count("c") > order.count("a") > order.count("b")
    run_all(sched)
    for i in ids:
        out = sched.poll(i)
        assert out.status == 200 and json.loads(out.body)["steps"] == 6
    assert all(w.closed for w in works)


def test_the_budget_projects_the_next_step_and_reserves_the_finish(tmp_path):
    sched, clock = scheduler(tmp_path, compute_seconds=5.6)
    work = FakeWork(clock, "long", steps=100, cost=1.0, reserve=0.5, finish_cost=0.5)
    job = sched.submit(work, {})["job"]
    run_all(sched)
    body = json.loads(sched.poll(job).body)
    # 5 steps (5 s) + the finish (0.5 s) fit 5.6 s; a sixth step would not have left room for the finish
    assert body == {"name": "long", "steps": 5, "stopped_early": True}
    state = sched.store.read_state(job)
    assert state["state"] == "done" and state["stopped_early"] and state["compute_s"] <= 5.6


def test_a_step_longer_than_the_rest_raises_the_projection(tmp_path):
    sched, clock = scheduler(tmp_path, compute_seconds=10.0)
    work = FakeWork(clock, "w", steps=100, cost=1.0, reserve=0.0, finish_cost=0.0)
    costs = iter([1.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    original = work.step

    def step():
        if work.started:
            work.cost = next(costs)
        original()

    work.step = step
    job = sched.submit(work, {})["job"]
    run_all(sched)
    # 1 + 4 = 5 s; the projection is now 4 s: 5 + 4 <= 10, a step of 1 s: 6; 6 + 4 = 10 <= 10: 7; 7 + 4 > 10
    assert json.loads(sched.poll(job).body)["steps"] == 4


def test_the_wall_ceiling_counts_the_other_jobs_steps(tmp_path):
    sched, clock = scheduler(tmp_path, wall_seconds=20.0)
    works = [FakeWork(clock, str(i), steps=100, cost=1.0, reserve=0.5, finish_cost=0.5) for i in range(4)]
    ids = [sched.submit(w, {})["job"] for w in works]
    start = clock.t
    run_all(sched)
    for i in ids:
        out = json.loads(sched.poll(i).body)
        assert out["stopped_early"] and out["steps"] >= 3
    assert clock.t - start <= 20.0  # every answer within the wall ceiling, finishes included


def test_progress_while_running_then_the_answer(tmp_path):
    sched, clock = scheduler(tmp_path, progress_every=0.0)
    work = FakeWork(clock, "w", steps=4)
    first = sched.submit(work, {"mode": "fake", "estimate_s": 4.5})
    assert first["state"] == "queued" and first["step"] == 0 and first["estimate_s"] == 4.5
    sched.run_once()  # set-up
    sched.run_once()
    out = sched.poll(first["job"])
    state = json.loads(out.body)
    assert out.status == 202 and state["state"] == "running" and state["step"] == 1 and state["steps"] == 4
    assert state["objective"] == [1] and state["preview"] == "UE5H" and state["pid"] == os.getpid()
    assert state["projected_s"] >= state["compute_s"] and "eta_s" in state and "elapsed_s" in state
    run_all(sched)
    assert sched.poll(first["job"]).status == 200


def test_too_many_jobs_is_busy_with_a_retry_time(tmp_path):
    sched, clock = scheduler(tmp_path, max_jobs=2)
    sched.submit(FakeWork(clock, "a", steps=3), {})
    sched.submit(FakeWork(clock, "b", steps=3), {})
    with pytest.raises(Busy, match="maximum of 2") as busy:
        sched.submit(FakeWork(clock, "c"), {})
    assert busy.value.retry_after >= 1
    run_all(sched)
    sched.submit(FakeWork(clock, "c"), {})  # room again


def test_failures_keep_their_status(tmp_path):
    sched, clock = scheduler(tmp_path)
    bad, broken = FakeWork(clock, "bad", fail_at=2), FakeWork(clock, "broken", fail_at=0)
    bad.fail_with, broken.fail_with = InvalidOption("nope"), RuntimeError("boom")
    a, b = sched.submit(bad, {})["job"], sched.submit(broken, {})["job"]
    run_all(sched)
    assert sched.poll(a).status == 400 and json.loads(sched.poll(a).body)["message"] == "nope"
    out = sched.poll(b)
    assert out.status == 500 and json.loads(out.body)["type"] == "InternalError" and "boom" not in out.body.decode()
    assert bad.closed and broken.closed and sched.store.read_state(b)["state"] == "failed"


def test_unknown_malformed_and_expired_ids_are_404(tmp_path):
    sched, clock = scheduler(tmp_path, keep_seconds=60.0)
    for bad in ("nope", "../../etc/passwd", "A" * 22, "", "A" * 23):
        out = sched.poll(bad)
        assert out.status == 404 and "restarted worker" in json.loads(out.body)["message"]
    job = sched.submit(FakeWork(clock, "w", steps=1), {})["job"]
    run_all(sched)
    assert sched.poll(job).status == 200 and sched.poll(job).status == 200  # polls are idempotent
    clock.t += 61
    assert sched.poll(job).status == 404
    assert not list(tmp_path.glob(f"{job}*"))


def test_the_store_keeps_a_bounded_number_and_size_of_answers(tmp_path):
    sched, clock = scheduler(tmp_path, max_kept=3, max_kept_bytes=10**9, keep_seconds=600.0)
    ids = []
    for i in range(5):
        ids.append(sched.submit(FakeWork(clock, f"w{i}", steps=1), {})["job"])
        run_all(sched)
        clock.t += 1
        assert len(list(tmp_path.glob("*.out"))) == min(i + 1, 3)  # the cap holds as each answer is written
    assert [sched.poll(i).status for i in ids] == [404, 404, 200, 200, 200]
    assert sched.store.sweep(clock()) == 0  # nothing over the cap was left for the sweep
    small = JobStore(tmp_path, JobLimits(max_kept=100, max_kept_bytes=120))
    assert small.sweep(clock()) == 1  # each answer is about 50 bytes: two fit
    clock.t += 700
    assert sched.store.sweep(clock()) == 2 and not list(tmp_path.iterdir())


def test_the_state_on_disk_is_read_by_another_worker(tmp_path):
    sched, clock = scheduler(tmp_path, progress_every=0.0)
    other = JobScheduler(JobStore(tmp_path), sched.limits, thread=False, clock=clock, wall=clock)
    other.pid = os.getpid() + 1  # another worker of the model (its PID differs from the one that runs the job)
    work = FakeWork(clock, "w", steps=3)
    job = sched.submit(work, {})["job"]
    sched.run_once()
    sched.run_once()
    running = other.poll(job)
    assert running.status == 202 and json.loads(running.body)["step"] == 1
    run_all(sched)
    done = other.poll(job)
    assert done.status == 200 and json.loads(done.body)["steps"] == 3
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in tmp_path.iterdir())  # private files
    assert oct(tmp_path.stat().st_mode)[-3:] == "700"


def test_a_job_of_a_dead_worker_is_lost(tmp_path):
    sched, clock = scheduler(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    job = "x" * 22
    sched.store.write_state(job, {"job": job, "state": "running", "pid": pid, "updated": clock(), "step": 3})
    out = sched.poll(job)
    assert out.status == 410 and "submit it again" in json.loads(out.body)["message"]
    # this very process, but not among its jobs (the scheduler was replaced): lost too
    sched.store.write_state(job, {"job": job, "state": "running", "pid": os.getpid(), "updated": clock()})
    assert sched.poll(job).status == 410
    # a live worker that stopped writing its state long ago
    sched.store.write_state(job, {"job": job, "state": "running", "pid": os.getppid(), "updated": clock() - 999})
    assert sched.poll(job).status == 410
    sched.store.write_state(job, {"job": job, "state": "running", "pid": os.getppid(), "updated": clock()})
    assert sched.poll(job).status == 202


def test_a_folder_of_someone_else_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(PermissionError, match="belongs to uid"):
        JobStore(tmp_path)


def test_a_cancelled_job_ends_before_its_next_step_with_what_it_has(tmp_path):
    sched, clock = scheduler(tmp_path, progress_every=0.0)
    slow, other = FakeWork(clock, "slow", steps=100), FakeWork(clock, "other", steps=3)
    job = sched.submit(slow, {"mode": "fake"})["job"]
    later = sched.submit(other, {})["job"]
    for _ in range(5):  # set-ups of both, then steps shared least compute first
        sched.run_once()
    done_before = slow.done
    out = sched.cancel(job)
    state = json.loads(out.body)
    assert out.status == 202 and state["cancel"] == "requested" and state["job"] == job and state["mode"] == "fake"
    assert sched.run_once()  # the cancelled job goes first, whatever its compute, and ends
    assert slow.done == done_before and slow.closed and not other.closed
    answer = sched.poll(job)
    assert answer.status == 200 and json.loads(answer.body) == {
        "name": "slow",
        "steps": done_before,
        "stopped_early": True,
    }
    assert sched.store.read_state(job)["cancelled"] is True and sched.store.read_state(job)["stopped_early"] is True
    assert sched.cancel(job).body == answer.body  # too late: the answer, as a poll gives it
    run_all(sched)
    assert json.loads(sched.poll(later).body)["steps"] == 3 and sched.store.read_state(later)["cancelled"] is False


def test_a_job_cancelled_while_queued_answers_its_set_up_alone(tmp_path):
    sched, clock = scheduler(tmp_path)
    work = FakeWork(clock, "w", steps=10)
    job = sched.submit(work, {})["job"]
    assert sched.cancel(job).status == 202
    run_all(sched)
    assert json.loads(sched.poll(job).body) == {"name": "w", "steps": 0, "stopped_early": True} and work.log == []


def test_a_cancel_that_another_worker_gets_reaches_the_running_one(tmp_path):
    sched, clock = scheduler(tmp_path, progress_every=0.0)
    other = JobScheduler(JobStore(tmp_path), sched.limits, thread=False, clock=clock, wall=clock)
    other.pid = os.getpid() + 1  # another worker of the model: the job is not among its own
    work = FakeWork(clock, "w", steps=50)
    job = sched.submit(work, {})["job"]
    sched.run_once()
    sched.run_once()
    out = other.cancel(job)
    assert out.status == 202 and json.loads(out.body)["cancel"] == "requested" and (tmp_path / f"{job}.cancel").exists()
    assert other.run_once() is False  # nothing of its own to run
    sched.run_once()
    assert work.done == 1 and work.closed and json.loads(other.poll(job).body)["stopped_early"] is True
    clock.t += sched.limits.keep_seconds + 1
    sched.store.sweep(clock())
    assert not list(tmp_path.iterdir())  # the cancel file goes with the job


def test_cancelling_unknown_and_lost_jobs_answers_as_a_poll(tmp_path):
    sched, clock = scheduler(tmp_path)
    assert sched.cancel("nope").status == 404 and sched.cancel("A" * 22).status == 404
    job = "x" * 22
    sched.store.write_state(job, {"job": job, "state": "running", "pid": os.getpid(), "updated": clock()})
    assert sched.cancel(job).status == 410 and not (tmp_path / f"{job}.cancel").exists()
