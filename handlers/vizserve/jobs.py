"""Slow work (optimizations) as jobs beside the request path: a queue that every worker of every replica takes
jobs from, checkpoints, and resumption of a job whose worker died.

A request that asks for an optimization is checked and estimated in the request path, then submitted to the
:class:`JobScheduler` as a RECORD (opaque, self-contained bytes: the request's fields and input, serialized by the
job adapter) and answered at once (202, with a job ID). The record goes into the store's queue
(:mod:`vizserve.jobstore`: a folder that the model's workers on this machine share, or a Redis that several servers
share, :mod:`vizserve.redisstore`). Each worker's scheduler thread, while it runs fewer than ``max_jobs`` jobs,
claims the next job of the queue and rebuilds its work with ``make_work(record, checkpoint)``; it runs its jobs
interleaved step by step: the next step goes to the job that has used the least compute so far, so concurrent jobs
share the worker fairly, and the worker's request thread stays free for fast requests.

Checkpoints: every ``checkpoint_every`` seconds between steps the scheduler saves ``Work.checkpoint()`` (with its
own accounting: step, compute used, recent step times). A job whose worker died (its lock went with its process in
the folder store; its claim was not renewed for ``lease_seconds`` in Redis) is claimed by the next worker with a
free slot, rebuilt from its last checkpoint, and goes on; its state and its answer's state count ``resumed`` and
``redone_steps`` (the steps its dead worker had reported past the checkpoint). A poll meanwhile answers 202 with the
last state written. A job whose workers died ``max_resumes`` times fails (410 JobLost): it may be what kills them.

Every poll answers what the store holds, byte for byte: any worker of any replica answers the same bytes for the
same job at the same moment (the running worker writes the progress, with the clock and the projection brought up
to date, every ``progress_every`` seconds).

Budgets: each job gets ``compute_seconds`` of compute (the time its own steps took, summed, across resumptions) and
a wall-clock ceiling of ``wall_seconds`` from its submission. Before each step the scheduler projects the step's
time (the longest of the job's recent steps) and the time its final scoring and encoding will take
(``Work.reserve_s``); when they do not fit what is left, the job finishes early with what it has. Admission: at most
``max_queued`` jobs wait in the whole queue; one more is answered 429 with a ``Retry-After`` from the queue's depth
and the number of workers taking jobs from it.

Cancelling: :meth:`JobScheduler.cancel`, on any worker of any replica, records a cancel in the store; the running
worker looks for it between steps and ends the job with what it has (``stopped_early``).

The store unreachable (Redis down): :meth:`~JobScheduler.submit`, :meth:`~JobScheduler.poll` and
:meth:`~JobScheduler.cancel` raise :class:`StoreUnavailable` (503 with ``Retry-After``); running jobs go on, their
answers are kept in memory and written when the store is back, and no job is taken over from another worker until
its worker had time to renew its claims (half a lease after the store is back).

A job may also be submitted as a :class:`Work` object made in the request path (the service before its job adapter
serialized requests): it is not in the queue, only this worker can run it, and it is lost with this worker (410).

This module knows nothing of TorchServe, torch or the modes: a job is any :class:`Work`.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .jobstore import (
    JOB_ID,
    Busy,
    Claim,
    FolderStore,
    JobLimits,
    Outcome,
    Store,
    StoreUnavailable,
    default_job_dir,
    make_store,
)

__all__ = [
    "JOB_ID", "Busy", "FolderStore", "Job", "JobLimits", "JobScheduler", "JobStore", "Outcome", "Store",
    "StoreUnavailable", "Work", "default_job_dir", "make_store",
]  # fmt: skip

JobStore = FolderStore  # its name before there were two stores

log = logging.getLogger(__name__)

HOST = socket.gethostname()


class Work(Protocol):
    """One job's computation, done one unit at a time by the scheduler thread.

    ``steps``: how many steps the job asks for; ``done``: steps done so far (a work rebuilt from a checkpoint
    starts at the checkpoint's step). ``step()`` runs one unit (the first call may be the setup, which does no
    step). ``checkpoint()``: the state to resume from, as bytes (``None``: this work cannot resume, and a
    takeover redoes it from its start), called between steps every ``checkpoint_every`` seconds.
    ``finish(stopped_early)`` makes the answer from what there is (final scoring, encoding); before it, the
    scheduler sets ``work.facts`` to ``{"job", "resumed", "redone_steps"}`` for the answer to report.
    ``reserve_s`` is the time the finish is expected to take; ``first_step_s`` a step's time before any was
    measured (the estimate). ``progress()``: JSON-able facts for a poll (objective values); ``preview()``: a small
    PNG or ``None``. ``close()`` releases what the work holds (called once, after finish or a failure)."""

    steps: int
    done: int
    reserve_s: float
    first_step_s: float

    def step(self) -> None: ...
    def checkpoint(self) -> bytes | None: ...
    def finish(self, stopped_early: bool) -> Outcome: ...
    def progress(self) -> dict[str, Any]: ...
    def preview(self) -> bytes | None: ...
    def close(self) -> None: ...


MakeWork = Callable[[bytes, "bytes | None"], Work]


def _failure(exc: BaseException) -> Outcome:
    """A failed job's answer: a request error keeps its status (anything with ``status`` and ``as_dict``), the
    rest is the server's own fault (500)."""
    if hasattr(exc, "status") and hasattr(exc, "as_dict"):
        return Outcome(exc.status, "application/json", json.dumps(exc.as_dict()).encode())
    body = {"code": 500, "type": "InternalError", "message": "the job failed in the server; see its log"}
    return Outcome(500, "application/json", json.dumps(body).encode())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _pack(meta: dict[str, Any], data: bytes) -> bytes:
    """A JSON line of the scheduler's own facts, then the caller's bytes as they are."""
    return json.dumps(meta).encode() + b"\n" + data


def _unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    head, sep, data = blob.partition(b"\n")
    if not sep:
        raise ValueError("not a packed job record or checkpoint")
    meta = json.loads(head)
    if not isinstance(meta, dict):
        raise ValueError("not a packed job record or checkpoint")
    return meta, data


def _json(status: int, body: dict[str, Any]) -> Outcome:
    return Outcome(status, "application/json", json.dumps(body).encode())


@dataclass
class Job:
    id: str
    work: Work
    about: dict[str, Any]  # what the submitter wants in every state (mode, estimate)
    submitted: float  # monotonic, on this worker's clock (a job taken over: its submission, moved to this clock)
    submitted_wall: float
    queued: bool = False  # in the store's queue (a record): resumable, renewed, given back on stop
    compute: float = 0.0
    started: bool = False  # its first unit (the setup) has run
    recent: deque = field(default_factory=lambda: deque(maxlen=4))  # the last steps' seconds
    snapshot: dict[str, Any] = field(default_factory=dict)  # the state last written (what a poll answers)
    written: float = float("-inf")
    checkpointed: float = 0.0  # clock of the last checkpoint (or of the claim)
    cancelled: bool = False  # asked to end before its next step
    resumed: int = 0  # times it was taken over from a worker that died
    redone: int = 0  # steps redone after those takeovers
    lost: bool = False  # another worker took it over (this one could not renew its claim): dropped

    def projected_step(self) -> float:
        return max(self.recent) if self.recent else self.work.first_step_s


class JobScheduler:
    """Takes jobs from the store's queue and runs them on one thread, step by step, least compute first.

    Args:
        store: the queue, states, checkpoints and answers (:func:`vizserve.jobstore.make_store`).
        limits: :class:`JobLimits`.
        make_work: rebuilds a job's work from its record and last checkpoint (``None``: from its start); without
            it, this scheduler runs only :class:`Work` objects submitted to it and takes nothing from the queue.
        on_thread_start: called once in the scheduler thread before any job (to set its number of compute
            threads).
        thread: run the threads (the scheduler's from the start when ``make_work`` is given: it takes other
            workers' jobs; else from the first submission); ``False`` for tests, which call :meth:`run_once`
            and :meth:`renew`.
        clock, wall: monotonic and wall-clock seconds (tests pass a fake one).
    """

    claim_every = 0.5  # seconds between looks at the queue while jobs run and a slot is free
    cancel_every = 0.2  # seconds between looks for cancels that other workers got
    idle_wait = 0.5  # seconds a scheduler with no job waits for one before it looks again

    def __init__(
        self,
        store: Store,
        limits: JobLimits = JobLimits(),
        *,
        make_work: MakeWork | None = None,
        on_thread_start: Callable[[], None] | None = None,
        thread: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.limits, self.make_work = store, limits, make_work
        self._on_thread_start = on_thread_start
        self._use_thread = thread
        self._thread: threading.Thread | None = None
        self._renewer: threading.Thread | None = None
        self._clock, self._wall = clock, wall
        self._jobs: dict[str, Job] = {}
        self._unwritten: dict[str, tuple[dict[str, Any], Outcome]] = {}  # answers the store could not take yet
        self._cond = threading.Condition()
        self._swept = float("-inf")
        self._claimed = float("-inf")
        self._cancels_seen = float("-inf")
        self._renewed = float("-inf")
        self._claim_now = False
        self._stopping = False
        self._down = False  # the store failed at its last use from the threads
        self._back_at = float("-inf")  # when it answered again
        self.pid = os.getpid()
        self.consumer = f"{HOST}-{self.pid}-{secrets.token_hex(3)}"
        if thread and make_work is not None:
            self._start_threads()

    def attach(self, make_work: MakeWork) -> None:
        """Give a scheduler made before its service the function that rebuilds work from records, and start its
        threads (it takes other workers' jobs from the queue from now on)."""
        self.make_work = make_work
        if self._use_thread:
            self._start_threads()

    # -- the request path -----------------------------------------------------------------------------------------

    def active(self) -> int:
        """Jobs this worker runs now."""
        with self._cond:
            return len(self._jobs)

    def submit(self, record: bytes | Work, about: dict[str, Any]) -> dict[str, Any]:
        """Queue a job; returns its first state (the 202 body). ``record``: the bytes ``make_work`` rebuilds the
        work from (any worker may run it), or a :class:`Work` object that only this worker runs. ``about``
        (JSON-able) goes into every state; its ``steps``, if any, is the state's until the work is made. Raises
        :class:`Busy` when the queue holds ``max_queued`` jobs already (a Work object: when this worker holds
        ``max_jobs``), :class:`StoreUnavailable` when the store cannot be reached."""
        about = dict(about)
        if not isinstance(record, (bytes, bytearray, memoryview)):
            return self._submit_work(record, about)
        if self.make_work is None:
            raise ValueError("this scheduler was made without make_work: it cannot run records")
        info = self.store.queue()
        estimated = about.get("estimate_s") is not None  # 0.0 is an estimate (a short job), not none
        each = float(about["estimate_s"]) if estimated else self.limits.compute_seconds / 2
        # until this one ends, were the queue's jobs like it (checked only with an estimate)
        ahead = (info.queued + 1) * each / info.workers if estimated else 0.0
        if info.queued >= self.limits.max_queued or ahead > self.limits.wall_seconds:
            if info.queued >= self.limits.max_queued:  # until enough of the queue's jobs were done
                wait = each * (info.queued - self.limits.max_queued + 1) / info.workers
                why = f"holds its maximum of {self.limits.max_queued} jobs waiting (max_queued)"
            else:  # until the compute over the ceiling was done
                wait = ahead - self.limits.wall_seconds
                why = (f"holds {info.queued} jobs waiting: this one would not end within its "
                       f"{self.limits.wall_seconds:.0f} s (wall_seconds)")  # fmt: skip
            retry = max(1.0, round(wait, 1))
            raise Busy(
                f"the job queue {why} for the {info.workers} worker(s) that take jobs from it; try again in about "
                f"{retry:.0f} s",
                retry,
            )
        job_id, now = secrets.token_urlsafe(16), self._wall()
        state = self._first_state(job_id, about, now, steps=about.get("steps"), queued=True)
        self.store.enqueue(job_id, _pack({"about": about, "submitted": now}, bytes(record)), state)
        with self._cond:
            self._claim_now = True
            self._cond.notify()
        self._maybe_sweep()
        if self._use_thread:
            self._start_threads()
        return state

    def _submit_work(self, work: Work, about: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            if len(self._jobs) >= self.limits.max_jobs:
                ends = [self._remaining(j) for j in self._jobs.values()]
                retry = max(1.0, round(min(ends), 1)) if ends else 1.0
                raise Busy(
                    f"this worker is running its maximum of {self.limits.max_jobs} optimization jobs "
                    f"(max_jobs); try again in about {retry:.0f} s",
                    retry,
                )
            job = Job(secrets.token_urlsafe(16), work, about, self._clock(), self._wall())
            job.snapshot = self._first_state(job.id, about, job.submitted_wall, steps=work.steps, queued=False)
            self.store.enqueue(job.id, None, job.snapshot)  # StoreUnavailable: the caller closes the work
            job.written = self._clock()
            self._jobs[job.id] = job
            self._cond.notify()
        self._maybe_sweep()
        if self._use_thread:
            self._start_threads()
        return dict(job.snapshot)

    def _first_state(self, job_id: str, about: dict, now: float, steps: Any, queued: bool) -> dict[str, Any]:
        return {
            **about, "job": job_id, "state": "queued", "step": 0, "steps": steps, "compute_s": 0.0,
            "elapsed_s": 0.0, "budget": {"compute_s": self.limits.compute_seconds, "wall_s": self.limits.wall_seconds},
            "resumable": queued, "resumed": 0, "redone_steps": 0, "host": HOST, "pid": self.pid,
            "submitted": now, "updated": now,
        }  # fmt: skip

    def poll(self, job_id: str) -> Outcome:
        """What a poll answers, from the store (the same bytes on every worker): 202 with the last state written
        while the job is queued or running (also while another worker takes it over), its answer once it is done
        (its own status), 410 for a job lost with its worker, 404 for an unknown or expired ID. Raises
        :class:`StoreUnavailable` when the store cannot be reached."""
        job_id = str(job_id)
        data = self.store.read_state_bytes(job_id) if JOB_ID.fullmatch(job_id) else None
        state = json.loads(data) if data is not None else None
        if state is None:
            return _json(404, {"code": 404, "type": "UnknownJob", "message": (
                "no such job: unknown, or its answer expired (answers are kept "
                f"{self.limits.keep_seconds:.0f} s after the job ends), or it was lost with a restarted worker "
                "before it ended; submit it again")})  # fmt: skip
        if state.get("finished") is not None:
            if self._wall() - state["finished"] > self.limits.keep_seconds:
                self.store.remove(job_id)
                return self.poll("-")
            body = self.store.read_result(job_id)
            if body is None:
                return self.poll("-")  # removed between the two reads: as unknown
            return Outcome(int(state["status"]), state["content_type"], body)
        with self._cond:
            ours = job_id in self._jobs
        if not ours and not state.get("resumable") and self._lost(state):
            pid = int(state.get("pid", 0))
            return _json(410, {"code": 410, "type": "JobLost", "job": job_id, "message": (
                f"job {job_id} was lost: the worker that ran it (pid {pid}) is gone or stopped reporting (a worker "
                "restart loses its running jobs; finished answers survive it); submit it again")})  # fmt: skip
        return Outcome(202, "application/json", data)

    def _lost(self, state: dict[str, Any]) -> bool:
        """Whether a job that is not in the queue (a Work object of some worker) is gone with its worker."""
        if self._wall() - state.get("updated", 0) > self.limits.lost_after:
            return True
        if state.get("host", HOST) != HOST:
            return False  # another machine's worker: only its silence tells
        pid = int(state.get("pid", 0))
        return pid == self.pid or not _pid_alive(pid)

    def cancel(self, job_id: str) -> Outcome:
        """Ask a queued or running job to end before its next step, with what it has (as when its budget ends):
        202 with its state and ``"cancel": "requested"``; a poll then answers its answer. A job already done
        answers its answer, an unknown one 404 and a lost one 410, as a poll would. Any worker of any replica
        takes a cancel: the one that runs the job finds it in the store between steps."""
        job_id = str(job_id)
        with self._cond:
            job = self._jobs.get(job_id)
            if job is not None:
                job.cancelled = True
                self._cond.notify()
        try:
            out = self.poll(job_id)
        except StoreUnavailable:
            if job is None:
                raise
            return _json(202, {**job.snapshot, "cancel": "requested"})  # ours: it ends all the same
        if out.status != 202:
            return out
        if job is None:
            self.store.request_cancel(job_id)
        return _json(202, {**json.loads(out.body), "cancel": "requested"})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads after the current step. Jobs from the queue are checkpointed and given back (the next
        worker with a free slot resumes them); Work objects are dropped (lost for their pollers)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in (self._thread, self._renewer):
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
        self._flush()
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            if job.queued and not job.lost:
                try:
                    self._checkpoint(job)
                    self.store.release(self.consumer, job.id)
                except (StoreUnavailable, OSError) as exc:
                    log.warning("job %s: not given back (%s); another worker takes it over later", job.id, exc)
            self._close(job)

    # -- the threads ----------------------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        with self._cond:
            if self._stopping:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="viz-jobs", daemon=True)
                self._thread.start()
                atexit.register(self.stop)  # a daemon thread killed inside torch at exit aborts the process
            if self.store.needs_renewal and (self._renewer is None or not self._renewer.is_alive()):
                self._renewer = threading.Thread(target=self._renew_loop, name="viz-jobs-lease", daemon=True)
                self._renewer.start()

    def _loop(self) -> None:
        if self._on_thread_start is not None:
            try:
                self._on_thread_start()
            except Exception:
                log.exception("job thread set-up failed")
        while True:
            with self._cond:
                if self._stopping:
                    return
                busy = bool(self._jobs)
            if not busy and self.make_work is not None:
                got = self._try_claim(self.idle_wait if self.store.blocking else 0.0)
                with self._cond:
                    if not got and not self._jobs and not self._stopping and not self._claim_now:
                        if not self.store.blocking or self._down:  # else claim() waited already
                            self._cond.wait(timeout=self.idle_wait if not self._down else 1.0)
                self._flush()
                self._maybe_sweep()
                continue
            if not busy:
                with self._cond:
                    while not self._jobs and not self._stopping:
                        self._cond.wait(timeout=30)
                        if not self._jobs:
                            self._maybe_sweep()
                continue
            self.run_once()

    @property
    def _renew_every(self) -> float:
        return max(0.2, self.limits.lease_seconds / 3)

    def _renew_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(timeout=0.5 if self._down else self._renew_every)
                if self._stopping:
                    return
            self.renew()

    def renew(self) -> None:
        """Renew this worker's claims on its jobs from the queue (and on the answers it could not write yet); a job
        found taken over by another worker is marked lost and dropped before its next step."""
        self._renewed = self._clock()
        with self._cond:
            jobs = {j.id: j for j in self._jobs.values() if j.queued}
            ids = list(jobs) + [j for j in self._unwritten if j not in jobs]
        if not ids:
            return
        kept = self._store(self.store.renew, self.consumer, ids)
        if kept is None:
            return
        with self._cond:
            for job_id, job in jobs.items():
                if job_id not in kept:
                    job.lost = True
                    log.warning("job %s: taken over by another worker (this one could not renew its claim)", job_id)

    def _store(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` from the threads: ``None`` (logged once) while the store cannot be reached."""
        try:
            out = fn(*args)
        except StoreUnavailable as exc:
            if not self._down:
                log.warning("job store unreachable: %s; running jobs go on", exc)
            self._down = True
            return None
        except OSError:
            log.exception("job store: %r failed", fn)
            return None
        if self._down:
            self._down, self._back_at = False, self._clock()
            log.warning("job store reachable again")
        return out

    # -- claims ---------------------------------------------------------------------------------------------------

    def _try_claim(self, wait: float) -> bool:
        """Take the next job of the queue when a slot is free. Takeovers wait half a lease after the store came
        back: every worker had time to renew its claims by then."""
        with self._cond:
            if self.make_work is None or self._stopping or len(self._jobs) >= self.limits.max_jobs:
                return False
            self._claim_now = False
        self._claimed = self._clock()
        takeover = not self._down and self._clock() - self._back_at >= self.limits.lease_seconds / 2
        claim = self._store(self.store.claim, self.consumer, takeover, wait)
        if claim is None:
            return False
        self._admit(claim)
        return True

    def _admit(self, claim: Claim) -> None:
        with self._cond:
            if claim.job_id in self._jobs:
                return  # its own job, whose claim had lapsed: taking it again renewed it
        state = claim.state
        try:
            meta, record = _unpack(claim.record)
        except ValueError:
            meta, record = {"about": {}, "submitted": state.get("submitted", self._wall())}, b""
        ckpt_meta, ckpt = {}, None
        if claim.checkpoint is not None:
            try:
                ckpt_meta, ckpt = _unpack(claim.checkpoint)
            except ValueError:
                log.warning("job %s: its checkpoint is unreadable; it starts over", claim.job_id)
        taken_over = state.get("state") != "queued"  # a worker had claimed it before, and died or stopped
        resumed = int(state.get("resumed", 0)) + taken_over
        redone = int(state.get("redone_steps", 0))
        if taken_over:
            redone += max(0, int(state.get("step") or 0) - int(ckpt_meta.get("step", 0)))
        submitted_wall = float(meta.get("submitted", state.get("submitted", self._wall())))
        about = dict(meta.get("about", {}))
        failure: BaseException | None = None
        work: Work | None = None
        if resumed > self.limits.max_resumes:
            failure = _JobLost(claim.job_id, resumed)
        else:
            try:
                work = self.make_work(record, ckpt)
            except Exception as exc:
                log.exception("job %s: its work could not be made from its record", claim.job_id)
                failure = exc
        job = Job(
            claim.job_id, work if work is not None else _NoWork(about.get("steps")), about,
            self._clock() - (self._wall() - submitted_wall), submitted_wall, queued=True,
            compute=float(ckpt_meta.get("compute", 0.0)),  # the compute of the steps it has (none: from its start)
            checkpointed=self._clock(), resumed=resumed, redone=redone,
        )  # fmt: skip
        job.recent.extend(float(s) for s in ckpt_meta.get("recent", []))
        if taken_over:
            log.warning("job %s taken over (resumed %d times, %d steps redone)", job.id, resumed, redone)
        with self._cond:
            self._jobs[job.id] = job
            self._cancels_seen = float("-inf")  # a cancel sent while it was queued is read before its first step
        if failure is not None:
            self._end(job, False, failure=failure)
        else:
            self._write(job, "running")

    # -- one unit of work -----------------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """One unit of work: take a job from the queue if a slot is free (at most every ``claim_every`` s while
        jobs run), then the next step of the job with the least compute so far, or its end when the step
        (projected) and the final encoding no longer fit its budget. Returns whether anything ran."""
        self._flush()
        if self._renewer is None and self.store.needs_renewal and self._clock() - self._renewed >= self._renew_every:
            self.renew()  # no renewing thread (tests): between steps
        due = self._claim_now or not self._jobs or self._clock() - self._claimed >= self.claim_every  # idle: at once
        if self.make_work is not None and due:
            self._try_claim(0.0)
        with self._cond:
            for job in [j for j in self._jobs.values() if j.lost]:
                self._jobs.pop(job.id)
                self._close(job)
            if not self._jobs:
                return False
            if self._clock() - self._cancels_seen >= self.cancel_every:
                self._cancels_seen = self._clock()
                ids = [j.id for j in self._jobs.values() if not j.cancelled]
            else:
                ids = []
        found = self._store(self.store.cancelled, ids) if ids else None
        with self._cond:
            for job_id in found or ():
                if job_id in self._jobs:
                    self._jobs[job_id].cancelled = True
            cancelled = [j for j in self._jobs.values() if j.cancelled]
            job = min(cancelled or self._jobs.values(), key=lambda j: (j.compute, j.submitted))
            ahead = sum(j.projected_step() for j in self._jobs.values())  # a round of every job's next step
        work = job.work
        try:
            if job.cancelled:
                self._end(job, work.done < work.steps)
                return True
            if job.started:
                reserve = work.reserve_s
                over_compute = job.compute + job.projected_step() + reserve > self.limits.compute_seconds
                over_wall = self._clock() + ahead + reserve > job.submitted + self.limits.wall_seconds
                if work.done >= work.steps or over_compute or over_wall:
                    self._end(job, work.done < work.steps)
                    return True
            t0 = self._clock()
            work.step()
            spent = self._clock() - t0
            job.compute += spent
            first = not job.started
            if not first:
                job.recent.append(spent)
            job.started = True
            if job.queued and self._clock() - job.checkpointed >= self.limits.checkpoint_every:
                self._checkpoint(job)
            # after the set-up, after the first step (a poll sees the job move at once), then every progress_every
            first_step = job.snapshot.get("step") == 0 and work.done > 0
            if first or first_step or self._clock() - job.written >= self.limits.progress_every:
                self._write(job, "running", preview=True)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self._end(job, False, failure=exc)
        return True

    def _checkpoint(self, job: Job) -> None:
        t0 = self._clock()
        job.checkpointed = t0
        data = job.work.checkpoint() if job.started else None
        if data is None:
            return
        meta = {"step": job.work.done, "compute": round(job.compute, 6), "recent": list(job.recent)}
        self._store(self.store.write_checkpoint, job.id, _pack(meta, data))
        job.compute += self._clock() - t0  # the job's own cost

    def _end(self, job: Job, stopped_early: bool, failure: BaseException | None = None) -> None:
        try:
            if failure is None:
                job.work.facts = {"job": job.id, "resumed": job.resumed, "redone_steps": job.redone}
                t0 = self._clock()
                outcome = job.work.finish(stopped_early)
                job.compute += self._clock() - t0
            else:
                outcome = _failure(failure)
        except Exception as exc:
            log.exception("job %s failed while finishing", job.id)
            outcome = _failure(exc)
        finally:
            self._close(job)
        state = {**self._state(job, "done" if outcome.status < 400 else "failed"), "finished": self._wall(),
                 "stopped_early": stopped_early, "cancelled": job.cancelled}  # fmt: skip
        with self._cond:
            self._unwritten[job.id] = (state, outcome)
        self._flush()
        with self._cond:
            self._jobs.pop(job.id, None)

    @staticmethod
    def _close(job: Job) -> None:
        try:
            job.work.close()
        except Exception:
            log.exception("job %s: close failed", job.id)

    def _flush(self) -> None:
        """Write the answers the store could not take yet (it was unreachable)."""
        with self._cond:
            pending = list(self._unwritten.items())
        for job_id, (state, outcome) in pending:
            if self._store(self.store.write_result, job_id, state, outcome) is None and self._down:
                return  # still down: keep them all
            with self._cond:
                self._unwritten.pop(job_id, None)

    # -- states -------------------------------------------------------------------------------------------------

    def _remaining(self, job: Job) -> float:
        """Seconds of compute the job is expected to need still (at most what its budget leaves)."""
        left = (job.work.steps - job.work.done) * job.projected_step() + job.work.reserve_s
        return max(0.0, min(left, self.limits.compute_seconds - job.compute))

    def _state(self, job: Job, state: str) -> dict[str, Any]:
        """The state a poll answers, with the clock and the projection as of now."""
        now = self._clock()
        with self._cond:
            share = max(1, len(self._jobs))
        left = self._remaining(job)
        return {
            **job.about,
            "job": job.id,
            "state": state,
            "step": job.work.done,
            "steps": job.work.steps,
            "compute_s": round(job.compute, 3),
            "elapsed_s": round(now - job.submitted, 3),
            "projected_s": round(job.compute + left, 3),  # compute the job will have used when it ends
            "eta_s": round(min(left * share, max(0.0, job.submitted + self.limits.wall_seconds - now)), 1),
            "budget": {"compute_s": self.limits.compute_seconds, "wall_s": self.limits.wall_seconds},
            "resumable": job.queued,
            "resumed": job.resumed,
            "redone_steps": job.redone,
            "host": HOST,
            "pid": self.pid,
            "submitted": job.submitted_wall,
            "updated": self._wall(),
        }

    def _write(self, job: Job, state: str, preview: bool = False) -> None:
        snap = self._state(job, state)
        try:
            snap.update(job.work.progress())
            if preview:
                png = job.work.preview()
                if png is not None:
                    snap["preview"] = base64.b64encode(png).decode()
        except Exception:
            log.exception("job %s: progress failed", job.id)
        job.snapshot, job.written = snap, self._clock()
        self._store(self.store.write_state, job.id, snap)

    def _maybe_sweep(self) -> None:
        if self._clock() - self._swept < 30:
            return
        self._swept = self._clock()
        try:
            self.store.sweep(self._wall())
        except (OSError, StoreUnavailable) as exc:
            log.warning("sweeping the job store failed: %s", exc)


class _JobLost(Exception):
    """A job whose workers died ``max_resumes`` times: it fails, as it may be what kills them."""

    status = 410

    def __init__(self, job_id: str, times: int) -> None:
        super().__init__(job_id)
        self.job_id, self.times = job_id, times

    def as_dict(self) -> dict[str, Any]:
        return {"code": 410, "type": "JobLost", "job": self.job_id, "message": (
            f"job {self.job_id} was lost: the workers that ran it stopped {self.times} times while it ran (it may be "
            "what stops them: too large for their memory?); submit it again, smaller")}  # fmt: skip


class _NoWork:
    """The stand-in of a job whose work could not be made (it fails at once)."""

    reserve_s = first_step_s = 0.0
    done = 0

    def __init__(self, steps: Any) -> None:
        self.steps = int(steps or 0)

    def close(self) -> None:
        pass

    def progress(self) -> dict[str, Any]:
        return {}
