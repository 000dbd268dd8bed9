"""Jobs shared by several schedulers ("replicas") through one real redis-server, started on a free loopback port
and always stopped (skipped, saying so, where redis-server is missing): any replica takes, answers and cancels any
job with the same bytes; a worker killed with SIGKILL has its job finished by another from its checkpoint; Redis
killed for a few seconds gives clear 503-type errors, and everything goes on when it is back."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.jobfakes import CountingWork, make_work, record
from vizserve.jobs import Busy, JobLimits, JobScheduler, StoreUnavailable
from vizserve.redisstore import RedisStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def replica(url, thread=False, **limits):
    limits = JobLimits(**{"progress_every": 0.0, "checkpoint_every": 0.0, "lease_seconds": 1.0, **limits})
    return JobScheduler(RedisStore(url, "fake", limits), limits, make_work=make_work(), thread=thread)


def run_until(sched, done, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        if not sched.run_once():
            time.sleep(0.02)


def test_any_replica_takes_answers_and_cancels_any_job_with_the_same_bytes(redis_server):
    a, b = replica(redis_server.url), replica(redis_server.url)
    try:
        first = a.submit(record("one", 5), {"mode": "fake", "steps": 5})
        job = first["job"]
        assert first["state"] == "queued" and first["steps"] == 5 and first["resumable"] is True
        assert a.poll(job).body == b.poll(job).body and a.poll(job).status == 202
        assert b.run_once() and b.active() == 1 and a.active() == 0  # B took A's submission from the shared queue
        b.run_once()
        b.run_once()
        running = [a.poll(job), b.poll(job)]
        assert running[0].body == running[1].body and json.loads(running[0].body)["step"] == 2  # set-up, 2 steps
        run_until(b, lambda: b.active() == 0)
        answers = [a.poll(job), b.poll(job)]
        assert answers[0].status == answers[1].status == 200 and answers[0].body == answers[1].body
        body = json.loads(answers[0].body)
        assert body["steps"] == 5 and body["total"] == 15 and body["resumed"] == 0 and body["redone_steps"] == 0

        slow = a.submit(record("slow", 10_000), {"steps": 10_000})["job"]
        for _ in range(5):
            a.run_once()
        out = b.cancel(slow)
        assert out.status == 202 and json.loads(out.body)["cancel"] == "requested"
        time.sleep(a.cancel_every)
        run_until(a, lambda: a.active() == 0, timeout=10)
        ended = json.loads(b.poll(slow).body)
        assert ended["stopped_early"] and 0 < ended["steps"] < 10_000 and a.poll(slow).body == b.poll(slow).body
        assert b.cancel(slow).body == b.poll(slow).body  # too late: the answer
        assert a.poll("A" * 22).status == 404 and b.cancel("nope").status == 404
    finally:
        for s in (a, b):
            s.stop()
            s.store.close()


def test_the_queue_is_bounded_with_a_retry_time_from_the_cluster_and_answers_are_capped_as_written(redis_server):
    a = replica(redis_server.url, max_queued=2, max_kept=2)
    try:
        ids = [a.submit(record(f"q{i}", 1), {"estimate_s": 8.0})["job"] for i in range(2)]
        with pytest.raises(Busy, match="maximum of 2 jobs waiting") as busy:
            a.submit(record("over", 1), {"estimate_s": 8.0})
        assert busy.value.retry_after == 8.0  # one job's estimate, over the one worker taking jobs
        ids.append(None)
        run_until(a, lambda: a.active() == 0 and a.store.queue().queued == 0)
        ids[2] = a.submit(record("q2", 1), {})["job"]
        run_until(a, lambda: a.active() == 0 and a.store.queue().queued == 0)
        assert [a.poll(i).status for i in ids] == [404, 200, 200]  # at most max_kept answers, the oldest went
        assert a.store.r.zcard(a.store.prefix + "done") == 2
    finally:
        a.stop()
        a.store.close()


def test_a_job_whose_worker_is_killed_finishes_on_another_from_its_checkpoint(redis_server):
    steps = 60
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.jobfakes", redis_server.url, "fake", "1.0", "0.2"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([f"{ROOT}/handlers", ROOT])},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    b = replica(redis_server.url)
    try:
        assert worker.stdout.readline().strip() == "ready"
        job = b.submit(record("long", steps, cost=0.05), {"steps": steps})["job"]
        deadline = time.monotonic() + 30
        while json.loads(b.poll(job).body)["step"] < 15:  # the worker process took it and ran 15 steps
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        during = b.poll(job)
        assert during.status == 202 and json.loads(during.body)["state"] == "running"  # never a 5xx
        run_until(b, lambda: b.poll(job).status != 202)
        answer = json.loads(b.poll(job).body)
        assert answer["steps"] == steps and answer["total"] == steps * (steps + 1) // 2  # every step, once
        assert answer["resumed"] == 1 and answer["restored_at"] >= 10  # from its checkpoint, not from its start
        state = b.store.read_state(job)
        assert state["resumed"] == 1 and state["redone_steps"] == answer["redone_steps"] >= 0
        assert state["redone_steps"] <= 15 and not state["stopped_early"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        worker.stdout.close()
        b.stop()
        b.store.close()


def test_redis_killed_for_a_few_seconds_gives_503s_and_then_everything_goes_on(redis_server):
    runner = replica(redis_server.url, thread=True, lease_seconds=5.0, checkpoint_every=0.5)
    other = replica(redis_server.url)
    try:
        CountingWork.made.clear()
        job = other.submit(record("through", 80, cost=0.05), {"steps": 80})["job"]
        deadline = time.monotonic() + 20
        while json.loads(other.poll(job).body)["step"] < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        work = CountingWork.made[-1]
        redis_server.kill()
        at_kill = work.done
        with pytest.raises(StoreUnavailable, match="cannot be reached") as down:
            other.poll(job)
        assert down.value.retry_after > 0
        with pytest.raises(StoreUnavailable):
            other.submit(record("later", 1), {})
        with pytest.raises(StoreUnavailable):
            other.cancel(job)
        time.sleep(2.0)
        assert work.done > at_kill + 10  # the running job went on without its store
        redis_server.start()
        deadline = time.monotonic() + 30
        while (out := other.poll(job)).status == 202:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answer = json.loads(out.body)
        assert out.status == 200 and answer["steps"] == 80 and answer["total"] == 80 * 81 // 2
        assert answer["resumed"] == 0  # no takeover of a live worker's job after the outage
        again = other.submit(record("after", 2), {})["job"]
        run_until(other, lambda: other.poll(again).status == 200, timeout=20)
    finally:
        runner.stop()
        other.stop()
        runner.store.close()
        other.store.close()
