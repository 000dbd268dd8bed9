"""The folder store: records that the model's workers on one machine share (a lock per job, which dies with its
worker's process, so the next worker resumes the job from its checkpoint), and its hardening against other local
users (no symbolic link followed, the folder's and its parent's owners checked, the cap on answers at write time)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.jobfakes import make_work, record
from vizserve.jobs import Busy, FolderStore, JobLimits, JobScheduler, make_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def worker(folder, clock, **limits):
    limits = JobLimits(**{"progress_every": 0.0, "checkpoint_every": 0.0, "compute_seconds": 1e6, **limits})
    mw = make_work(clock)
    return JobScheduler(FolderStore(folder, limits), limits, make_work=mw, thread=False, clock=clock, wall=clock)


def run_all(sched, limit=10_000):
    for _ in range(limit):
        if not sched.run_once():
            return
    raise AssertionError("did not end")


def test_a_record_is_taken_by_any_worker_of_the_machine_and_answered_alike(tmp_path):
    clock = Clock()
    a, b = worker(tmp_path, clock), worker(tmp_path, clock)
    job = a.submit(record("r", 4, cost=1.0), {"mode": "fake", "steps": 4})["job"]
    assert b.run_once() and b.active() == 1  # B, with a free slot, took A's submission
    assert a.run_once() is False  # A finds nothing to take: B holds its lock
    assert a.poll(job).body == b.poll(job).body and a.poll(job).status == 202
    run_all(b)
    assert a.poll(job).body == b.poll(job).body
    body = json.loads(a.poll(job).body)
    assert body["steps"] == 4 and body["total"] == 10 and body["resumed"] == 0
    assert not list(tmp_path.glob("*.rec")) and not list(tmp_path.glob("*.ckpt"))  # gone with the answer


def test_a_record_cancelled_while_queued_runs_no_step_even_just_after_a_look_for_cancels(tmp_path):
    """The worker looks for other workers' cancels every ``cancel_every`` s while jobs run; a job it claims is looked
    up at once, so a cancel sent while the job was queued ends it before its first step (it ran 1 step or more when
    the last look had been within ``cancel_every``, a fresh-clone CI run's failure)."""
    clock = Clock()
    a = worker(tmp_path, clock)
    first = a.submit(record("first", 100, cost=0.001), {"steps": 100})["job"]
    assert a.run_once() and a.run_once()  # claimed; its set-up, then a step: the look for cancels is recent
    queued = a.submit(record("queued", 100, cost=0.001), {"steps": 100})["job"]
    assert worker(tmp_path, clock).cancel(queued).status == 202  # another worker takes the cancel: in the store
    run_all(a)
    body = json.loads(a.poll(queued).body)
    assert body["steps"] == 0 and body["stopped_early"] is True, body
    assert json.loads(a.poll(first).body)["steps"] == 100


def test_the_queue_is_counted_right_while_another_thread_lists_the_folder(tmp_path):
    """The request thread counts the queue while the job thread looks for jobs to claim: each listing reads the
    folder through its own open file (os.listdir of one shared fd counted names twice or not at all under two
    threads, and a queue of one job answered 429 'holds its maximum of 2')."""
    import secrets
    import threading

    store = FolderStore(tmp_path, JobLimits())
    for _ in range(60):
        store.enqueue(secrets.token_urlsafe(16), b"{}", {"state": "queued", "submitted": 0.0})
    counts: list[int] = []

    def count() -> None:
        for _ in range(150):
            counts.append(store.queue().queued)

    threads = [threading.Thread(target=count) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counts) == 300 and set(counts) == {60}, sorted(set(counts))


def test_a_stopped_worker_gives_its_jobs_back_and_another_resumes_them_from_the_checkpoint(tmp_path):
    clock = Clock()
    a, b = worker(tmp_path, clock), worker(tmp_path, clock)
    job = a.submit(record("r", 10, cost=1.0), {"steps": 10})["job"]
    for _ in range(5):  # the set-up and 4 steps
        a.run_once()
    a.stop()
    b.run_once()
    run_all(b)
    body = json.loads(b.poll(job).body)
    assert body["steps"] == 10 and body["total"] == 55 and body["restored_at"] == 4
    assert body["resumed"] == 1 and body["redone_steps"] == 0 and b.store.read_state(job)["resumed"] == 1


def test_the_queue_is_bounded_with_a_retry_time(tmp_path):
    clock = Clock()
    a = worker(tmp_path, clock, max_queued=1)
    a.submit(record("r", 1), {"estimate_s": 12.0})
    with pytest.raises(Busy, match="maximum of 1 jobs waiting") as busy:
        a.submit(record("s", 1), {"estimate_s": 12.0})
    assert busy.value.retry_after == 12.0


def test_a_job_whose_workers_keep_dying_fails_as_lost(tmp_path):
    clock = Clock()
    a = worker(tmp_path, clock, max_resumes=2)
    job = a.submit(record("r", 3), {})["job"]
    a.store.write_state(job, {**a.store.read_state(job), "state": "running", "resumed": 2, "step": 1})
    a.run_once()
    out = a.poll(job)
    assert out.status == 410 and json.loads(out.body)["type"] == "JobLost" and "stopped 3 times" in out.body.decode()


def test_a_killed_worker_process_has_its_job_resumed_by_the_next_worker(tmp_path):
    """The kernel drops the dead process's lock: the next worker (a restarted one) resumes the job at once."""
    folder = tmp_path / "fake"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobfakes", str(folder), "fake", "1.0", "0.2"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([f"{ROOT}/handlers", ROOT])},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    limits = JobLimits(progress_every=0.0, checkpoint_every=0.2)
    here = JobScheduler(FolderStore(folder, limits), limits, make_work=make_work(), thread=False)
    try:
        assert proc.stdout.readline().strip() == "ready"
        job = here.submit(record("long", 60, cost=0.05), {"steps": 60})["job"]
        deadline = time.monotonic() + 30
        while json.loads(here.poll(job).body)["step"] < 15:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert here.poll(job).status == 202
        deadline = time.monotonic() + 30
        while here.poll(job).status == 202:
            assert time.monotonic() < deadline
            here.run_once()
        answer = json.loads(here.poll(job).body)
        assert answer["steps"] == 60 and answer["total"] == 60 * 61 // 2 and answer["resumed"] == 1
        assert answer["restored_at"] >= 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


# -- hardening --------------------------------------------------------------------------------------------------------


def test_links_in_the_folder_are_never_followed(tmp_path):
    clock = Clock()
    a = worker(tmp_path / "m", clock)
    secret = tmp_path / "key_file.json"
    secret.write_text('{"key": "secret"}')
    folder = tmp_path / "m"
    done = "d" * 22
    a.store.write_state(done, {"job": done, "state": "done", "finished": clock(), "status": 200,
                               "content_type": "application/json", "bytes": 17})  # fmt: skip
    os.symlink(secret, folder / f"{done}.out")
    assert a.poll(done).status == 404 and b"secret" not in a.poll(done).body
    state_link = "s" * 22
    os.symlink(secret, folder / f"{state_link}.json")
    assert a.poll(state_link).status == 404
    os.link(folder / f"{done}.json", folder / f"{'h' * 22}.json")  # a second name for a file: not trusted either
    assert a.poll("h" * 22).status == 404
    queued = "q" * 22
    a.store.write_state(queued, {"job": queued, "state": "queued", "submitted": clock()})
    os.symlink(secret, folder / f"{queued}.rec")
    assert a.run_once() is False  # a record that is a link is no job
    a.store.write_result(done, {"job": done, "finished": clock()}, a.poll("-"))  # a write replaces the link
    assert secret.read_text() == '{"key": "secret"}' and not os.path.islink(folder / f"{done}.out")
    os.symlink(secret, folder / f"{done}.cancel")
    assert a.store.cancelled([done]) == set()


def test_a_folder_that_is_a_link_or_whose_parent_others_may_write_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "m")
    with pytest.raises(PermissionError, match="not a folder of this server"):
        FolderStore(tmp_path / "m")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="not sticky"):
        FolderStore(shared / "m")
    os.chmod(shared, 0o1777)  # as /tmp: others may not rename what is ours
    FolderStore(shared / "m").close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user (chown)")
def test_a_parent_folder_of_another_user_is_refused(tmp_path):
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(parent, 4242, 4242)
    with pytest.raises(PermissionError, match="parent .* belongs to uid 4242"):
        FolderStore(parent / "m")


def test_the_store_is_chosen_by_one_setting(tmp_path):
    from vizserve import ServerConfig

    config = ServerConfig.read({}, env={"VIZ_JOB_STORE": str(tmp_path / "f")})
    store = make_store(config.jobs.store, "m")
    assert isinstance(store, FolderStore) and store.folder == tmp_path / "f"
    store.close()
    with pytest.raises(ValueError, match="not one this server knows"):
        make_store("memcached://x", "m")


def test_a_job_that_could_not_end_within_its_wall_ceiling_behind_the_queue_is_refused(tmp_path):
    clock = Clock()
    a = worker(tmp_path, clock, wall_seconds=100.0)
    a.submit(record("r", 1), {"estimate_s": 40.0})
    with pytest.raises(Busy, match="would not end within its 100 s") as busy:
        a.submit(record("s", 1), {"estimate_s": 60.0})  # 1 ahead + itself: 120 s of one worker's compute
    assert busy.value.retry_after == 20.0
    a.submit(record("t", 1), {"estimate_s": 50.0})  # 100 s: fits
