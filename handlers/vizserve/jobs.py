"""Slow work (optimizations) as jobs beside the request path, inside the worker process.

A request that asks for an optimization is checked and estimated in the request path, then handed to a
:class:`JobScheduler` and answered at once (202, with a job ID). One scheduler thread per worker runs the jobs,
interleaved step by step: the next step goes to the job that has used the least compute so far, so concurrent jobs
share the machine fairly, and the worker's request thread stays free for fast requests (and answers within
TorchServe's response timeout, which would kill the worker otherwise).

Budgets: each job gets ``compute_seconds`` of compute (the time its own steps took, summed) and a wall-clock ceiling
of ``wall_seconds`` from its submission. Before each step the scheduler projects the step's time (the longest of
the job's recent steps) and the time its final scoring and encoding will take (``Work.reserve_s``); when they do
not fit what is left, the job finishes early with what it has.

State survives the worker: every job's state is a JSON file, and every finished job's answer a file beside it, in a
folder per model (:class:`JobStore`), written atomically (a temporary file, then a rename). A poll answered by
another worker of the model, or by the worker TorchServe starts after this one died, still finds a finished result;
a job that was running in a worker that died is reported as lost (its state names the worker's PID, and the PID is
checked), never as running forever.

Cancelling: :meth:`JobScheduler.cancel` ends a job before its next step with what it has so far (its answer says
``stopped_early``), as its budget running out would. The worker that runs the job may not be the one that gets the
cancel (TorchServe picks a worker per request), so the cancel is also a file (``ID.cancel``) that the running
worker looks for before each step.

This module knows nothing of TorchServe, torch or the modes: a job is any :class:`Work`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Busy", "Job", "JobLimits", "JobScheduler", "JobStore", "Outcome", "Work", "default_job_dir"]

log = logging.getLogger(__name__)

#: What :func:`secrets.token_urlsafe` (16 bytes) makes; anything else is no job of ours (never a path).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def default_job_dir(model: str) -> Path:
    """``$VIZ_JOB_DIR/<model>``, by default ``<system temp dir>/cnnviz-jobs/<model>``."""
    base = os.environ.get("VIZ_JOB_DIR") or str(Path(tempfile.gettempdir()) / "cnnviz-jobs")
    return Path(base) / model


@dataclass(frozen=True)
class JobLimits:
    """Caps of the job system (model-config.yaml's ``handler:`` section sets them through :class:`Limits`)."""

    max_jobs: int = 4  # jobs one worker holds at once (queued and running); one more is answered 429
    compute_seconds: float = 90.0  # compute a job gets (its steps' time, summed)
    wall_seconds: float = 300.0  # wall-clock ceiling from submission to the answer
    keep_seconds: float = 600.0  # a finished job's answer is kept this long, then a poll gets 404
    max_kept: int = 64  # finished jobs kept per model; the oldest go first
    max_kept_bytes: int = 256 * 1024 * 1024  # their answers' bytes, together
    progress_every: float = 1.0  # seconds between progress writes (with a preview) of a running job
    lost_after: float = 120.0  # a running job whose state was not written for this long is lost


@dataclass(frozen=True)
class Outcome:
    """A job's answer: exactly what the synchronous request would have answered."""

    status: int
    content_type: str
    body: bytes


class Work(Protocol):
    """One job's computation, done one unit at a time by the scheduler thread.

    ``steps``: how many steps the job asks for; ``done``: steps done so far. ``step()`` runs one unit (the first
    call may be the setup, which does no step). ``finish(stopped_early)`` makes the answer from what there is
    (final scoring, encoding); ``reserve_s`` is the time it is expected to take; ``first_step_s`` a step's time
    before any was measured (the estimate). ``progress()``: JSON-able facts for a poll (objective values);
    ``preview()``: a small PNG or ``None``. ``close()`` releases what the work holds (called once, after finish or
    a failure)."""

    steps: int
    done: int
    reserve_s: float
    first_step_s: float

    def step(self) -> None: ...
    def finish(self, stopped_early: bool) -> Outcome: ...
    def progress(self) -> dict[str, Any]: ...
    def preview(self) -> bytes | None: ...
    def close(self) -> None: ...


class Busy(Exception):
    """The worker holds its maximum of jobs; ``retry_after`` seconds is when one is expected to end."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


class JobStore:
    """Job states (``ID.json``), answers (``ID.out``) and cancel requests (``ID.cancel``) in one folder per model,
    private to the server's user."""

    def __init__(self, folder: Path, limits: JobLimits = JobLimits()) -> None:
        self.folder = Path(folder)
        self.limits = limits
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = self.folder.stat()
        if st.st_uid != os.getuid():
            raise PermissionError(f"job folder {self.folder} belongs to uid {st.st_uid}, not to this server")
        if st.st_mode & 0o077:
            os.chmod(self.folder, 0o700)  # results are the callers' data: no one else reads them

    def _path(self, job_id: str, suffix: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not a job ID")
        return self.folder / f"{job_id}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_state(self, job_id: str, state: dict[str, Any]) -> None:
        self._write(self._path(job_id, ".json"), json.dumps(state).encode())

    def write_result(self, job_id: str, state: dict[str, Any], outcome: Outcome) -> None:
        """The answer first, then the state that points at it: a state that says done always has its answer."""
        self._write(self._path(job_id, ".out"), outcome.body)
        self.write_state(
            job_id,
            {**state, "status": outcome.status, "content_type": outcome.content_type, "bytes": len(outcome.body)},
        )

    def read_state(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(job_id, ".json").read_bytes())
        except (OSError, ValueError):
            return None

    def read_result(self, job_id: str) -> bytes | None:
        try:
            return self._path(job_id, ".out").read_bytes()
        except (OSError, ValueError):
            return None

    def request_cancel(self, job_id: str) -> None:
        self._write(self._path(job_id, ".cancel"), b"")

    def cancel_requested(self, job_id: str) -> bool:
        return self._path(job_id, ".cancel").exists()

    def remove(self, job_id: str) -> None:
        for suffix in (".out", ".json", ".cancel"):
            self._path(job_id, suffix).unlink(missing_ok=True)

    def states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in self.folder.glob("*.json"):
            job_id = path.name.removesuffix(".json")
            if JOB_ID.fullmatch(job_id):
                state = self.read_state(job_id)
                if state is not None:
                    out[job_id] = state
        return out

    def sweep(self, now: float | None = None) -> int:
        """Remove expired answers, lost jobs older than ``keep_seconds`` and leftover temporary files, then the
        oldest finished jobs while more than ``max_kept`` or ``max_kept_bytes`` are kept. Returns how many went."""
        now = time.time() if now is None else now
        keep = self.limits.keep_seconds
        removed = 0
        finished = []
        for job_id, state in self.states().items():
            if state.get("finished") is not None:
                if now - state["finished"] > keep:
                    self.remove(job_id)
                    removed += 1
                else:
                    finished.append((state["finished"], job_id, state.get("bytes", 0)))
            elif now - state.get("updated", now) > max(keep, self.limits.lost_after):
                self.remove(job_id)  # a lost job, long ago
                removed += 1
        for tmp in self.folder.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > 60:
                    tmp.unlink()
            except OSError:
                pass
        finished.sort()
        total = sum(b for _, _, b in finished)
        while finished and (len(finished) > self.limits.max_kept or total > self.limits.max_kept_bytes):
            _, job_id, size = finished.pop(0)
            self.remove(job_id)
            total -= size
            removed += 1
        return removed


@dataclass
class Job:
    id: str
    work: Work
    about: dict[str, Any]  # what the submitter wants in every state (mode, estimate)
    submitted: float  # monotonic
    submitted_wall: float
    compute: float = 0.0
    started: bool = False  # its first unit (the setup) has run
    recent: deque = field(default_factory=lambda: deque(maxlen=4))  # the last steps' seconds
    snapshot: dict[str, Any] = field(default_factory=dict)  # the state last written (what a poll answers)
    written: float = float("-inf")
    cancelled: bool = False  # asked to end before its next step

    def projected_step(self) -> float:
        return max(self.recent) if self.recent else self.work.first_step_s


def _json(status: int, body: dict[str, Any]) -> Outcome:
    return Outcome(status, "application/json", json.dumps(body).encode())


class JobScheduler:
    """Runs the jobs of one worker on one thread, step by step, least compute first.

    Args:
        store: where states and answers go.
        limits: :class:`JobLimits`.
        on_thread_start: called once in the scheduler thread before any job (to set its number of compute
            threads).
        thread: start the thread on the first submission; ``False`` for tests, which call :meth:`run_once`.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        store: JobStore,
        limits: JobLimits = JobLimits(),
        *,
        on_thread_start: Callable[[], None] | None = None,
        thread: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.limits = store, limits
        self._on_thread_start = on_thread_start
        self._use_thread = thread
        self._thread: threading.Thread | None = None
        self._clock, self._wall = clock, wall
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._swept = float("-inf")
        self._stopping = False
        self.pid = os.getpid()

    # -- the request path -----------------------------------------------------------------------------------------

    def active(self) -> int:
        with self._cond:
            return len(self._jobs)

    def submit(self, work: Work, about: dict[str, Any]) -> dict[str, Any]:
        """Enqueue ``work``; returns the job's first state (the 202 body). Raises :class:`Busy` when the worker
        holds ``max_jobs`` already."""
        with self._cond:
            if len(self._jobs) >= self.limits.max_jobs:
                ends = [self._remaining(j) for j in self._jobs.values()]
                retry = max(1.0, round(min(ends), 1)) if ends else 1.0
                raise Busy(
                    f"this worker is running its maximum of {self.limits.max_jobs} optimization jobs "
                    f"(max_jobs); try again in about {retry:.0f} s",
                    retry,
                )
            job = Job(secrets.token_urlsafe(16), work, dict(about), self._clock(), self._wall())
            self._jobs[job.id] = job
            self._write(job, "queued")
            self._cond.notify()
        self._maybe_sweep()
        if self._use_thread and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._loop, name="viz-jobs", daemon=True)
            self._thread.start()
            atexit.register(self.stop)  # a daemon thread killed inside torch at exit aborts the process
        return dict(job.snapshot)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current step; the jobs left are dropped (and lost for their pollers)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            try:
                job.work.close()
            except Exception:
                log.exception("job %s: close failed", job.id)

    def poll(self, job_id: str) -> Outcome:
        """What a poll answers: 202 with the progress while the job is queued or running, its answer once it is
        done (its own status), 410 for a job lost with its worker, 404 for an unknown or expired ID."""
        job_id = str(job_id)
        with self._cond:
            job = self._jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None
            if job is not None:
                return _json(202, self._live(job, job.snapshot))
        state = self.store.read_state(job_id) if JOB_ID.fullmatch(job_id) else None
        if state is None:
            return _json(404, {"code": 404, "type": "UnknownJob", "message": (
                "no such job: unknown, or its answer expired (answers are kept "
                f"{self.limits.keep_seconds:.0f} s after the job ends), or it was lost with a restarted worker "
                "before it ended; submit it again")})  # fmt: skip
        if state.get("finished") is not None:
            if self._wall() - state["finished"] > self.limits.keep_seconds:
                self.store.remove(job_id)
                return self.poll(job_id)
            body = self.store.read_result(job_id)
            if body is None:
                return self.poll("-")  # removed between the two reads: as unknown
            return Outcome(int(state["status"]), state["content_type"], body)
        pid = int(state.get("pid", 0))
        stale = self._wall() - state.get("updated", 0) > self.limits.lost_after
        if pid == self.pid or not _pid_alive(pid) or stale:
            return _json(410, {"code": 410, "type": "JobLost", "job": job_id, "message": (
                f"job {job_id} was lost: the worker that ran it (pid {pid}) is gone or stopped reporting (a worker "
                "restart loses its running jobs; finished answers survive it); submit it again")})  # fmt: skip
        return _json(202, state)  # running in another worker of this model: its last written state

    def cancel(self, job_id: str) -> Outcome:
        """Ask a queued or running job to end before its next step, with what it has (as when its budget ends):
        202 with its state and ``"cancel": "requested"``; a poll then answers its answer. A job already done
        answers its answer, an unknown one 404 and a lost one 410, as a poll would."""
        job_id = str(job_id)
        with self._cond:
            job = self._jobs.get(job_id)
            if job is not None:
                job.cancelled = True
                self._cond.notify()
                return _json(202, {**self._live(job, job.snapshot), "cancel": "requested"})
        out = self.poll(job_id)
        if out.status != 202:
            return out
        try:  # running in another worker of this model: it finds the request before its next step
            self.store.request_cancel(job_id)
        except OSError:
            log.exception("job %s: could not write its cancel request", job_id)
            return _json(500, {"code": 500, "type": "InternalServerError", "message": "the cancel was not recorded"})
        return _json(202, {**json.loads(out.body), "cancel": "requested"})

    # -- the scheduler thread -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self._on_thread_start is not None:
            try:
                self._on_thread_start()
            except Exception:
                log.exception("job thread set-up failed")
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait(timeout=30)
                    if not self._jobs:
                        self._maybe_sweep()
                if self._stopping:
                    return
            self.run_once()

    def run_once(self) -> bool:
        """One unit of work: the next step of the job with the least compute so far, or its end when the step
        (projected) and the final encoding no longer fit its budget. Returns whether anything ran."""
        with self._cond:
            if not self._jobs:
                return False
            for j in self._jobs.values():  # a cancel that another worker got (a file): a stat a step
                j.cancelled = j.cancelled or self.store.cancel_requested(j.id)
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
            if first or self._clock() - job.written >= self.limits.progress_every:
                self._write(job, "running", preview=True)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self._end(job, False, failure=exc)
        return True

    def _end(self, job: Job, stopped_early: bool, failure: BaseException | None = None) -> None:
        try:
            if failure is None:
                t0 = self._clock()
                outcome = job.work.finish(stopped_early)
                job.compute += self._clock() - t0
            else:
                outcome = _failure(failure)
        except Exception as exc:
            log.exception("job %s failed while finishing", job.id)
            outcome = _failure(exc)
        finally:
            try:
                job.work.close()
            except Exception:
                log.exception("job %s: close failed", job.id)
        state = {**self._state(job, "done" if outcome.status < 400 else "failed"), "finished": self._wall(),
                 "stopped_early": stopped_early, "cancelled": job.cancelled}  # fmt: skip
        try:
            self.store.write_result(job.id, state, outcome)
        except OSError:
            log.exception("job %s: could not write its answer", job.id)
        with self._cond:
            self._jobs.pop(job.id, None)

    # -- states -------------------------------------------------------------------------------------------------

    def _remaining(self, job: Job) -> float:
        """Seconds of compute the job is expected to need still (at most what its budget leaves)."""
        left = (job.work.steps - job.work.done) * job.projected_step() + job.work.reserve_s
        return max(0.0, min(left, self.limits.compute_seconds - job.compute))

    def _state(self, job: Job, state: str) -> dict[str, Any]:
        now = self._clock()
        return {
            **job.about,
            "job": job.id,
            "state": state,
            "step": job.work.done,
            "steps": job.work.steps,
            "compute_s": round(job.compute, 3),
            "elapsed_s": round(now - job.submitted, 3),
            "budget": {"compute_s": self.limits.compute_seconds, "wall_s": self.limits.wall_seconds},
            "pid": self.pid,
            "submitted": job.submitted_wall,
            "updated": self._wall(),
        }

    def _live(self, job: Job, snapshot: dict[str, Any]) -> dict[str, Any]:
        """A poll's view: the last snapshot, with the clock and the projection brought up to date."""
        out = dict(snapshot)
        if job.started:
            out.update(state="running", step=job.work.done)
        share = max(1, len(self._jobs))
        left = self._remaining(job)
        out.update(
            elapsed_s=round(self._clock() - job.submitted, 3),
            compute_s=round(job.compute, 3),
            projected_s=round(job.compute + left, 3),  # compute the job will have used when it ends
            eta_s=round(min(left * share, max(0.0, job.submitted + self.limits.wall_seconds - self._clock())), 1),
        )
        return out

    def _write(self, job: Job, state: str, preview: bool = False) -> None:
        snap = self._state(job, state)
        try:
            snap.update(job.work.progress())
            if preview:
                png = job.work.preview()
                if png is not None:
                    import base64

                    snap["preview"] = base64.b64encode(png).decode()
        except Exception:
            log.exception("job %s: progress failed", job.id)
        snap = self._live(job, snap) if job.id in self._jobs else snap
        job.snapshot, job.written = snap, self._clock()
        try:
            self.store.write_state(job.id, snap)
        except OSError:
            log.exception("job %s: could not write its state", job.id)

    def _maybe_sweep(self) -> None:
        if self._clock() - self._swept < 30:
            return
        self._swept = self._clock()
        try:
            self.store.sweep(self._wall())
        except OSError:
            log.exception("sweeping %s failed", self.store.folder)
