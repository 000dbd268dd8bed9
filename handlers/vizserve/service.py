"""The request pipeline, independent of any model server: fields in, (status, content type, body) out.

The service only orchestrates: it parses each request of a batch (a bad one fails only itself), decodes the
inputs, runs the modes by their kind (:mod:`vizserve.modes.base`) and assembles one reply per request.

With a job scheduler (:mod:`vizserve.jobs`; the TorchServe handler has one), a request that asks for an
optimization (actmax, invert) is checked and estimated here, its fast modes are answered here, and its
optimization becomes a job that runs beside the request path: the request is answered at once (202, a job ID), and
a later request ``{"job": ID}`` answers the progress, then exactly the reply the request would have had;
``{"job": ID, "cancel": true}`` ends the job at its next step with what it has.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import torch
from torch import nn

from cnnviz import (
    InputTooLarge,
    InvalidInput,
    LayerTable,
    ModelSpec,
    OverBudget,
    TooManyJobs,
    VizError,
    forward,
    shared_copy,
)  # fmt: skip

from . import render
from .decode import NPY_MAGIC, read_image, read_npy
from .jobs import Busy, JobScheduler, Outcome
from .modes import MODES, BatchedMode, ForwardMode, OptimizeMode, StaticMode
from .modes.optimizing import Optimizing, preview
from .options import as_bool
from .preprocess import decode_fit, image_transform
from .request import ANIMATED, JOB_FIELDS, VizRequest, fields_of, parse_request
from .served import Limits, Served, release_cached_memory, smallest_input_side
from .video import VideoLimits, is_video, read_clip, video_transform

__all__ = ["Reply", "VizService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    modes: tuple[str, ...] = ()  # what the request asked for (empty when it could not be read)
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase

    @classmethod
    def error(cls, err: VizError) -> Reply:
        headers = (("Retry-After", str(round(err.extra["retry_after_s"]))),) if "retry_after_s" in err.extra else ()
        return cls(err.status, json.dumps(err.as_dict()).encode(), headers=headers)

    @classmethod
    def internal_error(cls) -> Reply:
        body = {"code": 500, "type": "InternalError", "message": "the server failed on this request; see its log"}
        return cls(500, json.dumps(body).encode())


class VizService:
    """Answers visualization requests for one model.

    Args:
        model: classifier in eval mode, already on ``device``.
        spec: its :class:`cnnviz.ModelSpec`; empty default layers are filled from the model's layer table.
        device: where the model is.
        name: the served name, reported in every response.
        transform: decoded image -> normalized input; default: the spec's preprocessing
            (:func:`vizserve.preprocess.image_transform`).
        limits: caps (:class:`Limits`).
        jobs: runs optimizations as jobs beside the request path (:class:`vizserve.jobs.JobScheduler`); without
            one they run in the request, within ``limits.max_busy_seconds`` of the batch (in-process use).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        device: torch.device,
        name: str,
        transform: Callable[[Any], torch.Tensor] | None = None,
        limits: Limits = Limits(),
        jobs: JobScheduler | None = None,
    ) -> None:
        table = LayerTable(model, spec.input_shape)
        spec = spec.with_defaults(table)
        if spec.min_side is None:
            spec = replace(spec, min_side=smallest_input_side(model, spec.input_shape, device))
        self.served = Served(model, spec, table, transform or image_transform(spec.preprocess), device, name, limits)
        # decode no more than the transform keeps (reduced-size JPEG decoding, extreme shapes cropped first);
        # None: a transform of the caller's own, which gets the whole image
        self._fit = decode_fit(spec.preprocess) if transform is None else None
        self._video_limits = VideoLimits()
        if spec.modality == "video":
            pre = spec.preprocess
            self._video_transform = video_transform(pre.resize, pre.crop, pre.mean, pre.std, pre.interpolation)
        self.jobs = jobs
        self._cost: dict[str, float] | None = None  # calibration of an optimization step (calibrate())
        self._scale = 1.0  # what the jobs' measured steps say of the calibration (learn())
        # torch threads of the request thread: (while no job runs, while one does); None: left as they are.
        # Set by load_service: every core for requests alone, the share split_threads leaves beside a job.
        self.request_threads: tuple[int, int] | None = None

    def _share_cores(self) -> None:
        """Requests get every core while no optimization job runs (a lone classify on 2 cores took 1.19x the stock
        handler's time on one), and leave the job thread its share while one does (else both slow down)."""
        if self.request_threads is None or self.jobs is None:
            return
        alone, beside_a_job = self.request_threads
        want = beside_a_job if self.jobs.active() else alone
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    # the attributes tests and tools read
    @property
    def model(self) -> nn.Module:
        return self.served.model

    @property
    def spec(self) -> ModelSpec:
        return self.served.spec

    @property
    def table(self) -> LayerTable:
        return self.served.table

    @property
    def limits(self) -> Limits:
        return self.served.limits

    # -- the batch ----------------------------------------------------------------------------------------------

    def handle(self, items: Sequence[Mapping[str, Any]], explain: Sequence[bool] | None = None) -> list[Reply]:
        """One reply per item, in order. Never raises for a bad request; an unexpected failure of one request
        becomes its own 500 reply. ``explain[i]`` (an ``/explanations`` call) adds mode gradcam to item ``i``.
        With a job scheduler, an optimization is answered 202 (a job) and ``{"job": ID}`` polls it."""
        deadline = time.monotonic() + self.limits.max_busy_seconds
        self._share_cores()
        replies: list[Reply | None] = [None] * len(items)
        jobs: dict[int, tuple[VizRequest, torch.Tensor | None]] = {}
        inputs: dict[int, dict[str, Any]] = defaultdict(dict)  # what was read of each video input
        estimates: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(items):
            try:
                fields = fields_of(item)
                if self.jobs is not None and set(fields) in JOB_FIELDS:
                    cancel = "cancel" in fields and as_bool("cancel", fields["cancel"])
                    replies[i] = replace(self.poll(fields["job"], cancel), modes=("job",))  # its metrics: Mode="job"
                    continue
                req = parse_request(fields, self.served, explain=bool(explain and explain[i]))
                if self.jobs is not None and self._optimizations(req):
                    estimates[i] = self.estimate(req)  # refused here (422) when far over the budget
                jobs[i] = (req, self._input(req, inputs[i]) if req.data is not None else None)
            except VizError as err:
                replies[i] = Reply.error(err)
            except Exception:
                log.exception("request %d: unexpected failure while reading it", i)
                replies[i] = Reply.internal_error()

        results: dict[int, dict[str, Any]] = defaultdict(dict)
        predicted = self._run_batched(jobs, replies, results)
        # A batched (gradient) pass already classified its requests: the shared forward pass is needed only for
        # feature maps then. Requests that already failed need no forward pass at all.
        plain = {
            i: job
            for i, job in jobs.items()
            if replies[i] is None and job[1] is not None and (i not in predicted or self._captures(job[0]))
        }
        captured = self._run_forward(plain, replies, predicted)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if replies[i] is not None:
                    break
                try:
                    if isinstance(mode, ForwardMode):
                        acts = captured.get(i, {})
                        results[i][name] = mode.present(self.served, req.values[name], predicted[i], acts)
                    elif isinstance(mode, StaticMode):
                        results[i][name] = mode.present(self.served, req.values[name])
                    elif isinstance(mode, OptimizeMode) and i not in estimates:
                        results[i][name] = mode.run(self.served, req.values[name], x, deadline - time.monotonic())
                except VizError as err:
                    replies[i] = Reply.error(err)
                except Exception:
                    log.exception("request %d: %s failed", i, name)
                    replies[i] = Reply.internal_error()
        for i, estimate in estimates.items():
            if replies[i] is None:
                req, x = jobs[i]
                try:
                    replies[i] = self._submit(req, x, results[i], inputs.get(i), estimate)
                except VizError as err:
                    replies[i] = Reply.error(err)
                except Exception:
                    log.exception("request %d: submitting its job failed", i)
                    replies[i] = Reply.internal_error()
        for i, (req, _) in jobs.items():
            if replies[i] is None:
                try:
                    replies[i] = self._reply(req, results[i], inputs.get(i))
                except VizError as err:
                    replies[i] = Reply.error(err)
                except Exception:
                    log.exception("request %d: unexpected failure while answering", i)
                    replies[i] = Reply.internal_error()
        done = [r if r is not None else Reply.internal_error() for r in replies]
        return [replace(r, modes=jobs[i][0].modes) if i in jobs else r for i, r in enumerate(done)]

    def _input(self, req: VizRequest, info: dict[str, Any]) -> torch.Tensor:
        """The normalized input of ``req``: an image ``[3, H, W]``, or for a video model a clip ``[3, T, H, W]``
        (``info`` gets what was read of a video file)."""
        limits, spec, data = self.limits, self.spec, req.data
        if spec.modality == "video":
            if data.startswith(NPY_MAGIC):
                return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side, rank=4,
                                max_frames=self._video_limits.max_frames)  # fmt: skip
            if not is_video(data):
                raise InvalidInput(
                    f"{spec.arch} takes a video (MP4, WebM, AVI, MKV, MOV, animated GIF, WebP or PNG) or a .npy "
                    f"float32 clip [3, T, H, W]; field 'data' is neither (first bytes {bytes(data[:8])!r})"
                )
            pre = spec.preprocess
            frames, start, seconds = req.clip["frames"], req.clip["start"], req.clip["clip"]
            clip, read = read_clip(
                data, frames=frames, start=start, clip=seconds, fps=pre.fps, limits=self._video_limits
            )
            info.update(read)
            return self._video_transform(clip)
        if data.startswith(NPY_MAGIC):
            return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side)
        return self.served.transform(read_image(data, max_pixels=limits.max_image_pixels, **(self._fit or {})))

    @staticmethod
    def _captures(req: VizRequest) -> list[str]:
        return [n for m in req.modes if isinstance(MODES[m], ForwardMode) for n in MODES[m].captures(req.values[m])]

    def _run_forward(self, jobs, replies, predicted) -> dict[int, dict[str, torch.Tensor]]:
        """One forward pass per input shape that classifies and captures every layer any request asked for; fills
        ``predicted`` and returns each request's captured outputs."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, x) in jobs.items():
            groups[tuple(x.shape)].append(i)
        captured: dict[int, dict[str, torch.Tensor]] = {}
        for members in groups.values():
            layers = sorted({name for i in members for name in self._captures(jobs[i][0])})
            try:
                batch = torch.stack([jobs[i][1] for i in members]).to(self.served.device, non_blocking=True)
                probs, acts = forward(self.model, batch, layers)
                probs, acts = probs.cpu(), {k: v.cpu() for k, v in acts.items()}
            except Exception:
                log.exception("forward pass failed for requests %s", members)
                for i in members:
                    replies[i] = Reply.internal_error()
                continue
            for k, i in enumerate(members):
                predicted[i] = probs[k]
                captured[i] = {name: acts[name][k] for name in self._captures(jobs[i][0])}
        return captured

    def _run_batched(self, jobs, replies, results) -> dict[int, torch.Tensor]:
        """The batched modes, one pass per group of requests that share the mode's group key and the input shape;
        each row keeps its own target. Returns the class probabilities the passes computed on the way."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if isinstance(mode, BatchedMode) and x is not None:
                    groups[(name, mode.group(req.values[name]), tuple(x.shape))].append(i)
        predicted: dict[int, torch.Tensor] = {}
        for (name, _, _), members in groups.items():
            members = [i for i in members if replies[i] is None]
            if not members:
                continue
            try:
                x = torch.stack([jobs[i][1] for i in members]).to(self.served.device, non_blocking=True)
                entries = MODES[name].run(self.served, x, [jobs[i][0].values[name] for i in members])
            except VizError as err:  # a cap only the batch can check (patches, CAM passes, time budget)
                for i in members:
                    replies[i] = Reply.error(err)
                continue
            except Exception:
                log.exception("%s failed for requests %s", name, members)
                for i in members:
                    replies[i] = Reply.internal_error()
                continue
            for i, (entry, probs) in zip(members, entries, strict=True):
                results[i][name] = entry
                if probs is not None:
                    predicted[i] = probs
        return predicted

    # -- optimizations as jobs ------------------------------------------------------------------------------------

    @staticmethod
    def _optimizations(req: VizRequest) -> list[str]:
        return [m for m in req.modes if isinstance(MODES[m], OptimizeMode)]

    def calibrate(self, least_s: float = 2.0, most_rounds: int = 8) -> dict[str, float]:
        """What an optimization costs on this worker, measured once (cached): actmax of one class image at the
        model's input size and at half of it, with the default options but one transformed copy a step (after a
        warm-up); the set-up, the shortest of five steps and the final scoring and encoding, each the least over
        rounds of both sizes (at least two, and until ``least_s`` seconds were spent or ``most_rounds`` ran: a
        small model's rounds take milliseconds, and a calibration taken while the machine was busy for a moment set
        every estimate 3x too high), fitted as ``fixed + per_image x n`` (``n``: images of the input size). The
        TorchServe handler calls it at model load, before any request."""
        if self._cost is None:
            side = self.spec.input_shape[-1]
            half = max(self.spec.min_side or 16, 16, side // 2)
            self._warm_up(half)
            runs: dict[int, list[dict[str, float]]] = {half: [], side: []}
            t0 = time.perf_counter()
            while len(runs[side]) < 2 or (time.perf_counter() - t0 < least_s and len(runs[side]) < most_rounds):
                for n in runs:  # the sizes in turn: a busy moment slows a round of both, not all runs of one
                    runs[n].append(self._measure(n))
            # part by part, the least: other work on the machine only ever slows a run down
            small, full = ({k: min(run[k] for run in runs[n]) for k in runs[n][0]} for n in (half, side))
            n_small = (half / side) ** 2
            cost: dict[str, float] = {}
            for part in ("setup", "step", "finish"):
                per = max((full[part] - small[part]) / max(1e-6, 1 - n_small), full[part] / 8)
                cost[f"{part}_per_image_s"] = per
                cost[f"{part}_fixed_s"] = max(0.0, full[part] - per)
            self._cost = cost
            log.info("%s: optimization cost per step %.4f s + %.4f s an image (%s px)", self.served.name,
                     cost["step_fixed_s"], cost["step_per_image_s"], side)  # fmt: skip
        return self._cost

    def _warm_up(self, size: int, least: int = 12, most: int = 40, seconds: float = 20.0) -> None:
        """Steps until they are steady: the first steps of a process are 10 to 20 times slower on a CPU (measured
        here: about 11 steps, whatever the shape), which would make every estimate that much too high."""
        served = replace(self.served, model=shared_copy(self.model))
        values = parse_request({"mode": "actmax", "channel": "0", "size": str(size), "copies": "1"}, served).values[
            "actmax"
        ]
        with torch.inference_mode(False):
            opt = MODES["actmax"].start(served, values, None)
            times: list[float] = []
            end = time.perf_counter() + seconds
            try:
                while len(times) < most and time.perf_counter() < end:
                    t0 = time.perf_counter()
                    opt.step()
                    times.append(time.perf_counter() - t0)
                    if len(times) >= least and max(times[-3:]) < 2 * min(times):
                        break
            finally:
                opt.close()

    def _measure(self, size: int) -> dict[str, float]:
        served = replace(self.served, model=shared_copy(self.model))
        mode = MODES["actmax"]
        fields = {"mode": "actmax", "channel": "0", "steps": "5", "size": str(size), "copies": "1"}
        values = parse_request(fields, served).values["actmax"]
        with torch.inference_mode(False):
            t0 = time.perf_counter()
            opt = mode.start(served, values, None)
            setup = time.perf_counter() - t0
            times = []
            for _ in range(values["steps"]):
                t0 = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            mode.present(served, values, opt.finish(False))
            finish = time.perf_counter() - t0
        return {"setup": setup, "step": min(times), "finish": finish}

    def estimate(self, req: VizRequest) -> dict[str, Any]:
        """The compute the request's optimizations will take, from :meth:`calibrate`: with ``n`` = targets x
        (size / input size)^2, steps x copies x (fixed + per image x n) plus the set-up and the final scoring and
        encoding at the same scale. Raises :class:`cnnviz.OverBudget` (422) when it is over ``refuse_factor`` x the
        budget, or when not even its set-up, one step and its answer fit the budget; between 1x and
        ``refuse_factor`` x, the job runs and stops early with what it has."""
        cost, limits, scale = self.calibrate(), self.limits, self._scale
        side = self.spec.input_shape[-1]

        def part(name: str, n: float) -> float:
            return (cost[f"{name}_fixed_s"] + cost[f"{name}_per_image_s"] * n) * scale

        def step(v: dict, n: float) -> float:  # each transformed copy is a forward and a backward of its own
            return part("step", n) * (v["copies"] if v["transforms"] else 1)

        parts = []
        for name in self._optimizations(req):
            v = req.values[name]
            n = MODES[name].targets(v) * (v["size"] / side) ** 2
            parts.append((name, v, n, part("setup", n) + part("finish", n) + step(v, n) * v["steps"]))
        total = sum(p[3] for p in parts)
        step_s = step(parts[0][1], parts[0][2])
        reserve = sum(part("finish", n) for _, _, n, _ in parts)
        limit = limits.max_busy_seconds * limits.refuse_factor
        about = {"estimate_s": round(total, 1), "step_s": round(step_s, 4), "budget_s": limits.max_busy_seconds}
        name, v, n, own = parts[0]
        one_step = part("setup", n) + part("finish", n) + step_s + (total - own)  # the least useful job
        if total > limit or one_step > limits.max_busy_seconds:
            room = limit - (total - own) - part("setup", n) - part("finish", n)
            fit = max(0, int(room / step_s)) if one_step <= limits.max_busy_seconds else 0
            targets = MODES[name].targets(v)
            advice = (f"at most {fit} steps fit at this size with {targets} targets" if fit else
                      f"not even one step fits the budget at this size with {targets} targets")  # fmt: skip
            raise OverBudget(
                f"this optimization would take about {total:,.0f} s of compute on this worker ({step_s:.3f} s a "
                f"step for {targets} targets at {v['size']} px, from steps measured on this model at {side} px, x "
                f"{v['steps']} steps; {one_step:.1f} s for its set-up, one step and its answer); a job gets "
                f"{limits.max_busy_seconds} s (max_busy_seconds) and is refused over {limits.refuse_factor} x that, "
                f"or when not one step fits; {advice}: ask for fewer steps, fewer targets or a smaller size",
                estimate_s=round(total, 1), limit_s=limit, budget_s=limits.max_busy_seconds, max_steps=fit,
            )  # fmt: skip
        return {**about, "reserve_s": reserve, "first_step_s": step_s, "exact_s": total, "scale": scale}

    def learn(self, estimate: Mapping[str, Any], step_times: Sequence[float]) -> None:
        """Correct later estimates by what a job's steps took: the calibration at model load may have run while
        the machine was busy (every model of a server calibrates at once), which made estimates 3x too high. The
        shortest of the job's steps (at least 4) over the step it was estimated at rescales every part, between
        1/20 and 20 times the calibration."""
        if len(step_times) >= 4 and estimate["first_step_s"] > 0:
            scale = estimate["scale"] * min(step_times) / estimate["first_step_s"]
            self._scale = min(20.0, max(0.05, scale))

    def _submit(self, req, x, results, read, estimate) -> Reply:
        work = _RequestWork(self, req, x, results, read, estimate)
        about = {"mode": ",".join(self._optimizations(req)), "estimate_s": estimate["estimate_s"],
                 "step_s": estimate["step_s"]}  # fmt: skip
        try:
            state = self.jobs.submit(work, about)
        except Busy as busy:
            work.close()
            raise TooManyJobs(str(busy), retry_after_s=busy.retry_after) from None
        poll = "POST field 'job' with this ID alone to this endpoint; add cancel=true to end it now"
        body = {**self.served.header(), **state, "poll": poll}
        return Reply(202, json.dumps(body).encode())

    def poll(self, job_id: Any, cancel: bool = False) -> Reply:
        """A job's progress or answer; with ``cancel``, the job is asked to end first (see JobScheduler.cancel)."""
        if isinstance(job_id, (bytes, bytearray)):
            job_id = bytes(job_id).decode("ascii", "replace")
        job_id = str(job_id).strip()[:64]
        out = self.jobs.cancel(job_id) if cancel else self.jobs.poll(job_id)
        return Reply(out.status, out.body, out.content_type)

    # -- one reply ----------------------------------------------------------------------------------------------

    def _reply(self, req: VizRequest, results: dict[str, Any], read: dict[str, Any] | None = None) -> Reply:
        out: dict[str, Any] = self.served.header()
        if read:
            out["input"] = read  # what was read of a video: container, codec, size, frames sampled and when
        for name in req.modes:
            if name in results:
                out["predictions" if name == "classify" else name] = results[name]
        if req.format == "png":
            picture = out[req.picture_mode]
            return Reply(200, (picture[0] if isinstance(picture, list) else picture)["image"], "image/png")
        if req.format != "json":  # an animation format (the parser checked a video model and an animated mode)
            picture = out[next(m for m in ANIMATED if m in out)]
            picture = picture[0] if isinstance(picture, list) else picture
            return Reply(200, picture["animation"], picture["animation_type"])
        body = json.dumps(out, default=render.b64).encode()  # pictures and arrays are bytes until here
        if len(body) > self.limits.max_response_bytes:
            raise InputTooLarge(
                f"the response would be {len(body) / 2**20:.1f} MiB, over this server's limit of "
                f"{self.limits.max_response_bytes / 2**20:.1f} MiB (max_response_size); ask for fewer layers or "
                f"channels, or leave out raw=true"
            )
        return Reply(200, body)


class _RequestWork:
    """The optimizations of one request as a job (:class:`vizserve.jobs.Work`): set up on a copy of the model with
    hooks of its own (made here, in the request thread, while no hooks are on the model), stepped by the job
    thread, and answered with exactly the reply the request would have had."""

    def __init__(self, service: VizService, req: VizRequest, x, results, read, estimate) -> None:
        self.service, self.req, self.x, self.results, self.read = service, req, x, dict(results), read
        self.served = replace(service.served, model=shared_copy(service.model))
        self.pending = VizService._optimizations(req)
        self.steps = sum(req.values[n]["steps"] for n in self.pending)
        self.done = 0
        self.reserve_s = estimate["reserve_s"]
        self.first_step_s = estimate["first_step_s"]
        self.estimate = estimate
        self.step_times: list[float] = []  # of the first optimization's steps: its estimate is of those
        self._base = 0
        self._current: tuple[str, Any] | None = None

    def step(self) -> None:
        if self._current is None:  # set-up of the next optimization (its first forward pass)
            name = self.pending[0]
            with torch.inference_mode(False):
                self._current = (name, MODES[name].start(self.served, self.req.values[name], self.x))
            return
        name, opt = self._current
        t0 = time.perf_counter()
        opt.step()
        if self._base == 0:
            self.step_times.append(time.perf_counter() - t0)
        self.done = self._base + opt.done
        if opt.finished:
            self._complete(False)

    def _complete(self, stopped_early: bool) -> None:
        name, opt = self._current
        mode: Optimizing = MODES[name]
        self.results[name] = mode.present(self.served, self.req.values[name], opt.finish(stopped_early))
        self._base += self.req.values[name]["steps"]
        self.pending.pop(0)
        self._current = None

    def finish(self, stopped_early: bool) -> Outcome:
        self.service.learn(self.estimate, self.step_times)
        if self._current is not None:
            self._complete(stopped_early)
        while self.pending:  # never started (out of time): what the set-up gives, no steps
            self.step()
            self._complete(True)
        reply = self.service._reply(self.req, self.results, self.read)
        return Outcome(reply.status, reply.content_type, reply.body)

    def progress(self) -> dict[str, Any]:
        if self._current is None:
            return {}
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
        release_cached_memory(self.served.device)
