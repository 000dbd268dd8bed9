"""The job adapter: a slow request as a :class:`vizserve.jobs.Work` that the job scheduler steps, and the replies of
submissions, polls and cancels.

A job is the whole request: its first unit decodes the input and runs every mode but the optimizations (the
pipeline's own :meth:`vizserve.pipeline.VizService.compute`, as for a request answered in place), then each
optimization is set up and stepped; the answer is assembled by the same :meth:`~vizserve.pipeline.VizService.answer`,
so a job answers exactly the reply the request would have had.

A job is submitted as a record, the request's fields as they came (:func:`encode_record`), so that any worker of any
replica that shares the job store can rebuild it (:func:`work_maker`), and resume it from its last checkpoint
(:meth:`RequestWork.checkpoint`: what its first unit made, and the running optimization's state).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from cnnviz import TooManyJobs, VizError, shared_copy

from .cost import MIB, Estimate, optimizations, probe
from .jobs import Busy, Outcome, StoreUnavailable
from .modes import MODES
from .modes.optimizing import preview
from .reply import Reply
from .request import VizRequest, parse_request
from .served import release_cached_memory

if TYPE_CHECKING:
    from .pipeline import VizService

__all__ = ["RequestWork", "StoreDown", "decode_record", "encode_record", "poll", "submit", "work_maker"]

POLL = "POST field 'job' with this ID alone to this endpoint; add cancel=true to end it now"
CANCELLED = {"code": 409, "type": "Cancelled", "message": "the job was cancelled before it started: nothing was "
             "computed; submit it again to run it"}  # fmt: skip


class StoreDown(VizError):
    """The shared job store cannot be reached: jobs are answered 503 with ``Retry-After`` (fast requests are
    not)."""

    status = 503


def _down(err: StoreUnavailable) -> StoreDown:
    return StoreDown(f"the job store cannot be reached now ({err}); jobs are answered again when it is back: try "
                     f"again in about {err.retry_after:.0f} s", retry_after_s=err.retry_after)  # fmt: skip


# -- records: a request as bytes, and back ------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Fields as JSON values: bytes as ``{"b64": ...}``."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            return base64.b64decode(value["b64"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def encode_record(req: VizRequest) -> bytes:
    """The request as a job's record: its fields as they came (the input's bytes as base64) and whether it was an
    ``/explanations`` call."""
    return json.dumps({"fields": _plain(req.fields), "explain": req.explain}).encode()


def decode_record(record: bytes) -> tuple[dict[str, Any], bool]:
    """``(fields, explain)`` of :func:`encode_record`'s bytes."""
    doc = json.loads(record)
    return _unplain(doc["fields"]), bool(doc.get("explain", False))


def work_maker(service: VizService) -> Callable[[bytes, bytes | None], RequestWork]:
    """What the scheduler rebuilds a job with, in any worker that shares the store: the request parsed again,
    estimated with a job's memory, and resumed from ``checkpoint`` when there is one."""

    def make(record: bytes, checkpoint: bytes | None) -> RequestWork:
        fields, explain = decode_record(record)
        req = parse_request(fields, service.served, explain=explain)
        memory = service.limits.job_memory_mb * MIB
        estimate = service.cost.estimate(req, probe(req, service.served, service.video_limits), memory)
        for v in req.values.values():
            v["_memory"] = memory
        work = RequestWork(service, req, estimate)
        if checkpoint is not None:
            work.restore(checkpoint)
        return work

    return make


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
        self.facts: dict[str, Any] = {}  # the scheduler's: job, resumed, redone_steps (set before finish)
        # a copy of the model with hooks of its own, from the service's copy that no pass ever runs on (so that no
        # hook is on it, whichever thread makes this)
        self.served = replace(service.served, model=shared_copy(service.job_template, requires_grad=True))
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

    def checkpoint(self) -> bytes | None:
        """What a takeover resumes from: the first unit's results, and the running optimization's state (see
        :meth:`cnnviz.Optimization.checkpoint`); ``None`` before the first unit ran (it is redone)."""
        if not self.prepared or self.reply is not None:
            return None
        meta = {
            "results": _plain(self.results), "read": _plain(self.read), "pending": list(self.pending),
            "base": self._base, "done": self.done, "current": self._current[0] if self._current else None,
            "step_times": self.step_times,
        }  # fmt: skip
        state = self._current[1].checkpoint() if self._current else b""
        return json.dumps(meta).encode() + b"\n" + state

    def restore(self, data: bytes) -> None:
        """Go on from :meth:`checkpoint`'s bytes (made by any worker of this model): the optimization running then
        is set up again and given its state; the steps after it are the ones that run would have made."""
        head, _, state = data.partition(b"\n")
        meta = json.loads(head)
        self.results, self.read = _unplain(meta["results"]), _unplain(meta["read"])
        self.pending, self._base, self.done = list(meta["pending"]), int(meta["base"]), int(meta["done"])
        self.step_times = [float(t) for t in meta.get("step_times", [])]
        self.prepared = True
        if self.req.data is not None:  # the optimizations that start from the input (invert, init=image) need it
            self.x = self.service.decode(self.req, self.served)
        if meta["current"]:
            name = meta["current"]
            with torch.inference_mode(False):
                opt = MODES[name].start(self.served, self.req.values[name], self.x)
                opt.restore(state)
            self._current = (name, opt)
            self.done = self._base + opt.done

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
        if self.facts.get("resumed") and isinstance(reply.payload, dict):  # taken over from a worker that died
            reply = replace(
                reply,
                payload={
                    **reply.payload,
                    "job": {"resumed": self.facts["resumed"], "redone_steps": self.facts["redone_steps"]},
                },
            )
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
        release_cached_memory(self.served.device)  # its peak goes back to the other workers of the GPU


def submit(service: VizService, req: VizRequest, estimate: Estimate) -> Reply:
    """Hand the request to the service's job scheduler, as a record any worker sharing the store can run: 202 with
    the job's first state and how to poll it; 429 (:class:`cnnviz.TooManyJobs`) when the queue is full; 503 when
    the store cannot be reached."""
    opt = estimate.optimization or {}
    steps = sum(req.values[n]["steps"] for n in optimizations(req)) or 1
    about = {"mode": ",".join(req.modes), **estimate.about(), "steps": steps}
    if opt:
        about.update(estimate_s=opt["estimate_s"], step_s=opt["step_s"])
    work: RequestWork | None = None
    try:
        if service.jobs.make_work is not None:
            state = service.jobs.submit(encode_record(req), about)
        else:  # a scheduler of tests and tools without records: this worker runs it
            work = RequestWork(service, req, estimate)
            state = service.jobs.submit(work, about)
    except Busy as busy:
        if work is not None:
            work.close()
        raise TooManyJobs(str(busy), retry_after_s=busy.retry_after) from None
    except StoreUnavailable as err:
        if work is not None:
            work.close()
        raise _down(err) from None
    return Reply(202, {**service.served.header(), **state, "poll": POLL})


def poll(service: VizService, job_id: Any, cancel: bool = False) -> Reply:
    """A job's progress or answer; with ``cancel``, the job is asked to end first (see JobScheduler.cancel)."""
    if isinstance(job_id, (bytes, bytearray)):
        job_id = bytes(job_id).decode("ascii", "replace")
    job_id = str(job_id).strip()[:64]
    try:
        out = service.jobs.cancel(job_id) if cancel else service.jobs.poll(job_id)
    except StoreUnavailable as err:
        return replace(Reply.error(_down(err)), modes=("job",))
    return Reply(out.status, out.body, out.content_type, modes=("job",))
