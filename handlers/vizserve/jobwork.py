"""The job adapter: a slow request as a :class:`vizserve.jobs.Work` that the job scheduler steps, and the replies of
submissions, polls and cancels.

A job is the whole request: its first unit decodes the input and runs every mode but the optimizations (the
pipeline's own :meth:`vizserve.pipeline.VizService.compute`, as for a request answered in place), then each
optimization is set up and stepped; the answer is assembled by the same :meth:`~vizserve.pipeline.VizService.answer`,
so a job answers exactly the reply the request would have had.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from cnnviz import TooManyJobs, shared_copy

from .cost import Estimate, optimizations
from .jobs import Busy, Outcome
from .modes import MODES
from .modes.optimizing import preview
from .reply import Reply
from .request import VizRequest

if TYPE_CHECKING:
    from .pipeline import VizService

__all__ = ["RequestWork", "poll", "submit"]

POLL = "POST field 'job' with this ID alone to this endpoint; add cancel=true to end it now"
CANCELLED = {"code": 409, "type": "Cancelled", "message": "the job was cancelled before it started: nothing was "
             "computed; submit it again to run it"}  # fmt: skip


class RequestWork:
    """One request as a job: its first unit runs everything but the optimizations (and sets the first one up, on
    a copy of the model with hooks of its own), then one unit a step; :meth:`finish` answers what the request
    would have answered. ``steps``: the optimizations' steps (1 for a request without one)."""

    def __init__(self, service: VizService, req: VizRequest, estimate: Estimate) -> None:
        self.service, self.req, self.estimate = service, req, estimate
        self.pending = optimizations(req)
        self.steps = sum(req.values[n]["steps"] for n in self.pending) or 1
        self.done = 0
        opt = estimate.optimization or {}
        self.reserve_s = opt.get("reserve_s", 0.05)
        self.first_step_s = opt.get("first_step_s", estimate.seconds)
        self.step_times: list[float] = []  # of the first optimization's steps: its estimate is of those
        self.results: dict[str, Any] = {}
        self.read: dict[str, Any] | None = None
        self.reply: Reply | None = None  # the request's own error, if its first unit failed
        self.x: torch.Tensor | None = None
        # a copy of the model with hooks of its own, made here in the request thread while no hooks are on the model
        self.served = replace(service.served, model=shared_copy(service.model))
        self.prepared = False
        self._scale = service.cost.pass_scale
        self._base = 0
        self._current: tuple[str, Any] | None = None

    def _prepare(self) -> None:
        t0 = time.perf_counter()
        replies: list[Reply | None] = [None]
        results, reads, inputs = self.service.compute({0: self.req}, replies, optimize=False, served=self.served)
        self.reply, self.results, self.read, self.x = replies[0], results[0], reads.get(0), inputs.get(0)
        self.prepared = True
        if not self.pending:
            self.service.cost.learn_passes(self.estimate.seconds, time.perf_counter() - t0, self._scale)
            self.done = self.steps
        elif self.reply is not None:  # the request failed: no optimization runs
            self.pending, self.done = [], self.steps

    def step(self) -> None:
        if not self.prepared:
            self._prepare()
            if not self.pending:
                return
        if self._current is None:  # set-up of the next optimization (its first forward pass)
            name = self.pending[0]
            with torch.inference_mode(False):
                self._current = (name, MODES[name].start(self.served, self.req.values[name], self.x))
            return
        _, opt = self._current
        t0 = time.perf_counter()
        opt.step()
        if self._base == 0:
            self.step_times.append(time.perf_counter() - t0)
        self.done = self._base + opt.done
        if opt.finished:
            self._complete(False)

    def _complete(self, stopped_early: bool) -> None:
        name, opt = self._current
        self.results[name] = MODES[name].present(self.served, self.req.values[name], opt.finish(stopped_early))
        self._base += self.req.values[name]["steps"]
        self.pending.pop(0)
        self._current = None

    def finish(self, stopped_early: bool) -> Outcome:
        if not self.prepared:  # cancelled before it started
            return Outcome(409, "application/json", Reply(409, CANCELLED).body)
        if self.estimate.optimization is not None:
            self.service.cost.learn(self.estimate.optimization, self.step_times)
        if self._current is not None:
            self._complete(stopped_early)
        while self.pending:  # never started (out of time): what the set-up gives, no steps
            self.step()
            self._complete(True)
        reply = self.reply or self.service.answer(self.req, self.results, self.read)
        return Outcome(reply.status, reply.content_type, reply.body)

    def progress(self) -> dict[str, Any]:
        if self._current is None:
            return {"running": ",".join(self.req.modes)} if not self.prepared else {}
        name, opt = self._current
        value = opt.value if opt.value is not None else opt.start
        return {"running": name, "objective": [round(float(v), 5) for v in value]}

    def preview(self) -> bytes | None:
        if self._current is None:
            return None
        with torch.no_grad():
            return preview(self._current[1].image())

    def close(self) -> None:
        if self._current is not None:
            self._current[1].close()
            self._current = None


def submit(service: VizService, req: VizRequest, estimate: Estimate) -> Reply:
    """Hand the request to the service's job scheduler: 202 with the job's first state and how to poll it, or 429
    (:class:`cnnviz.TooManyJobs`) when the worker holds its maximum of jobs."""
    work = RequestWork(service, req, estimate)
    opt = estimate.optimization or {}
    about = {"mode": ",".join(req.modes), **estimate.about()}
    if opt:
        about.update(estimate_s=opt["estimate_s"], step_s=opt["step_s"])
    try:
        state = service.jobs.submit(work, about)
    except Busy as busy:
        work.close()
        raise TooManyJobs(str(busy), retry_after_s=busy.retry_after) from None
    return Reply(202, {**service.served.header(), **state, "poll": POLL})


def poll(service: VizService, job_id: Any, cancel: bool = False) -> Reply:
    """A job's progress or answer; with ``cancel``, the job is asked to end first (see JobScheduler.cancel)."""
    if isinstance(job_id, (bytes, bytearray)):
        job_id = bytes(job_id).decode("ascii", "replace")
    job_id = str(job_id).strip()[:64]
    out = service.jobs.cancel(job_id) if cancel else service.jobs.poll(job_id)
    return Reply(out.status, out.body, out.content_type, modes=("job",))
