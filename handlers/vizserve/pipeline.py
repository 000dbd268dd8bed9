"""The request pipeline, independent of any model server: fields in, :class:`vizserve.reply.Reply` out.

The pipeline only orchestrates. For a batch it parses each request (a bad one fails only itself), then admits it
by its estimate (:mod:`vizserve.cost`, before any work): a request estimated within ``limits.fast_seconds`` and
``limits.fast_memory_mb`` (and within what the batch may spend inline, ``limits.batch_seconds``) runs here; a slower
one becomes a job (:mod:`vizserve.jobwork`) when the server has a job scheduler (the TorchServe handler has one): it
is answered at once (202, a job ID), and ``{"job": ID}`` answers its progress, then exactly the reply the request
would have had; ``{"job": ID, "cancel": true}`` ends it at its next step with what it has. What is over a job's
limits is refused (422) with its estimate and what would fit; an answer estimated over ``max_response_bytes`` is
refused (413) before any work. Without a scheduler (in-process use) every admitted request runs here.

The requests run here decode their inputs, then the modes run by their kind (:mod:`vizserve.modes.base`): one
shared forward pass per input shape, one pass per group of batched modes, and the answers are assembled.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from cnnviz import InputTooLarge, LayerTable, ModelSpec, OverBudget, VizError, forward, shared_copy

from . import jobwork
from .cost import MIB, CostModel, Estimate, optimizations, probe
from .decode import NPY_MAGIC, read_image, read_npy
from .fields import ANIMATED, JOB_FIELDS
from .jobs import JobScheduler
from .modes import MODES, BatchedMode, ForwardMode, OptimizeMode, StaticMode
from .options import as_bool
from .preprocess import decode_fit, image_transform
from .reply import Reply, json_size
from .request import VizRequest, fields_of, parse_request
from .served import Limits, Served, release_cached_memory, smallest_input_side
from .video import FrameResizer, VideoLimits, is_video, not_a_video, read_clip, video_transform

__all__ = ["VizService"]

log = logging.getLogger(__name__)


def _seconds(s: float) -> str:
    """Seconds for a message, to two significant digits: ``0.012 s``, ``1.5 s``, ``1,200 s``."""
    return f"{s:,.0f} s" if s >= 100 else f"{float(f'{s:.2g}'):g} s"


UNREADABLE = ("unreadable",)  # the modes a reply reports (for metrics) when its input could not be read


@contextmanager
def _answering(
    replies: list[Reply | None], members: Iterable[int], what: str, modes: tuple[str, ...] = ()
) -> Iterator[None]:
    """Within: work for the requests ``members``; a :class:`cnnviz.VizError` becomes each one's error reply, any
    other exception (logged, with ``what`` failed) each one's 500; ``modes``: what the reply says was asked
    (``("unreadable",)`` where the input could not be read; else the request's modes)."""
    try:
        yield
    except VizError as err:
        for i in members:
            replies[i] = replace(Reply.error(err), modes=modes)
    except Exception:
        log.exception("%s failed for requests %s", what, list(members))
        for i in members:
            replies[i] = replace(Reply.internal_error(), modes=modes)


class VizService:
    """Answers visualization requests for one model.

    Args:
        model: classifier in eval mode, already on ``device``.
        spec: its :class:`cnnviz.ModelSpec`; empty default layers are filled from the model's layer table.
        device: where the model is.
        name: the served name, reported in every response.
        transform: decoded image -> normalized input; default: the spec's preprocessing
            (:func:`vizserve.preprocess.image_transform`).
        limits: what one request may cost (:class:`vizserve.config.Limits`).
        video: what one video may cost to read (:class:`vizserve.video.VideoLimits`).
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
        video: VideoLimits = VideoLimits(),
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
        self.video_limits = video
        if spec.modality == "video":  # frames resized as they are decoded, then cropped and normalized
            pre = spec.preprocess
            self._fit_frame = FrameResizer(pre.resize, pre.crop, pre.interpolation)
            self._video_transform = video_transform(pre.resize, pre.crop, pre.mean, pre.std, pre.interpolation,
                                                    resized=True)  # fmt: skip
        # the model's copy that jobs copy theirs from, in any thread: no pass runs on it, so no hook is ever on it
        self.job_template = shared_copy(model, requires_grad=True)
        self.cost = CostModel(self.served)
        self._jobs: JobScheduler | None = None
        self.jobs = jobs
        # torch threads of the request thread: (while no job runs, while one does); None: left as they are.
        # Set by load_service: every core for requests alone, the share split_threads leaves beside a job.
        self.request_threads: tuple[int, int] | None = None

    @property
    def jobs(self) -> JobScheduler | None:
        """The job scheduler; given one, it is handed what rebuilds this service's jobs from their records."""
        return self._jobs

    @jobs.setter
    def jobs(self, scheduler: JobScheduler | None) -> None:
        self._jobs = scheduler
        if isinstance(scheduler, JobScheduler) and scheduler.make_work is None:
            scheduler.attach(jobwork.work_maker(self))

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

    def handle(
        self, items: Sequence[Mapping[str, Any]], explain: Sequence[bool] | None = None, *, jobs: bool = True
    ) -> list[Reply]:
        """One reply per item, in order. Never raises for a bad request; an unexpected failure of one request
        becomes its own 500 reply. ``explain[i]`` (an ``/explanations`` call) adds mode gradcam to item ``i``.
        ``jobs=False``: slow requests are refused (422) rather than made jobs (an edge that cannot poll one)."""
        self._share_cores()
        replies: list[Reply | None] = [None] * len(items)
        reqs: dict[int, VizRequest] = {}
        for i, item in enumerate(items):
            with _answering(replies, [i], "reading the request"):
                fields = fields_of(item)
                if self.jobs is not None and set(fields) in JOB_FIELDS:
                    cancel = "cancel" in fields and as_bool("cancel", fields["cancel"])
                    replies[i] = jobwork.poll(self, fields["job"], cancel)  # its metrics: Mode="job"
                    continue
                reqs[i] = parse_request(fields, self.served, explain=bool(explain and explain[i]))
        inline, memory = self._admit(reqs, replies, jobs and self.jobs is not None)
        results, reads, _ = self.compute(inline, replies)
        for i, req in inline.items():
            if replies[i] is None:
                with _answering(replies, [i], "answering"):
                    replies[i] = self.answer(req, results[i], reads.get(i))
        if memory > 64 * MIB:  # what a heavy batch freed goes back to the system, not to the next batch's peak
            release_cached_memory(self.served.device)
        done = [r if r is not None else Reply.internal_error() for r in replies]
        return [replace(r, modes=reqs[i].modes) if i in reqs and not r.modes else r for i, r in enumerate(done)]

    # -- admission ----------------------------------------------------------------------------------------------

    def _admit(
        self, reqs: dict[int, VizRequest], replies: list[Reply | None], jobs: bool
    ) -> tuple[dict[int, VizRequest], float]:
        """Estimate every request and decide: inline (returned, with the memory they are estimated at together), a
        job (its 202 in ``replies``), or refused. The cheapest go first, so that a slow request never pushes a fast
        one out of the batch's inline budget."""
        limits = self.limits
        fast_memory = limits.fast_memory_mb * MIB
        estimates: dict[int, Estimate] = {}
        sources = {}
        for i, req in reqs.items():
            with _answering(replies, [i], "reading the input", UNREADABLE):
                sources[i] = probe(req, self.served, self.video_limits)
            with _answering(replies, [i], "estimating"):
                if i not in sources:
                    continue
                estimate = self.cost.estimate(req, sources[i], fast_memory, optimize=self.jobs is not None)
                self._check_response(estimate)
                estimates[i] = estimate
        inline: dict[int, VizRequest] = {}
        spent = 0.0
        for i in sorted(estimates, key=lambda k: estimates[k].seconds):
            req, estimate = reqs[i], estimates[i]
            fast = (
                estimate.seconds <= min(limits.fast_seconds, limits.max_busy_seconds)
                and estimate.memory <= fast_memory
                and spent + estimate.seconds <= limits.batch_seconds
            )
            with _answering(replies, [i], "admitting"):
                if fast and not (optimizations(req) and self.jobs is not None):  # a scheduler's jobs optimize
                    inline[i] = self._with_memory(req, fast_memory)
                    spent += estimate.seconds
                    continue
                # a job's passes may hold the job's memory: estimated again with it (fewer, larger passes)
                job_memory = limits.job_memory_mb * MIB
                estimate = self.cost.estimate(req, sources[i], job_memory, optimize=self.jobs is not None)
                self._check_job(req, estimate, jobs)
                req = self._with_memory(req, job_memory)
                if jobs:
                    replies[i] = jobwork.submit(self, req, estimate)
                else:
                    inline[i] = req
        return inline, sum(estimates[i].memory for i in inline)

    @staticmethod
    def _with_memory(req: VizRequest, memory: float) -> VizRequest:
        """``req`` with the memory its modes' passes may hold (``values["_memory"]``, read by the modes)."""
        for v in req.values.values():
            v["_memory"] = memory
        return req

    def _check_response(self, estimate: Estimate) -> None:
        limit = self.limits.max_response_bytes
        if estimate.response > limit:
            raise InputTooLarge(
                f"the response would be at least {estimate.response / MIB:.1f} MiB (its arrays alone), over this "
                f"server's limit of {limit / MIB:.1f} MiB (max_response_size); ask for fewer layers, channels, "
                f"targets or a smaller size, or leave out raw=true",
                estimate_mb=round(estimate.response / MIB, 1), limit_mb=round(limit / MIB, 1),
            )  # fmt: skip

    def _check_job(self, req: VizRequest, estimate: Estimate, jobs: bool) -> None:
        """Refuse (422) what a job may not take: more memory than ``job_memory_mb`` at once, or more compute than
        ``max_busy_seconds`` (an optimization: more than ``refuse_factor`` times that, as its own estimate says:
        it stops early with what it has), or, where no job can be made, anything over the inline limits."""
        limits = self.limits
        memory = limits.job_memory_mb * MIB
        if self.jobs is None and optimizations(req):  # in-process: run within the budget, stopping early
            return
        if estimate.optimization is not None and estimate.optimization["refusal"] is not None:
            raise estimate.optimization["refusal"]
        about = {**estimate.about(), "limit_s": limits.max_busy_seconds, "budget_s": limits.max_busy_seconds,
                 "limit_mb": limits.job_memory_mb}  # fmt: skip
        if not jobs and self.jobs is not None:  # an edge that cannot poll: only what runs inline
            raise OverBudget(
                f"this request is estimated at {_seconds(estimate.seconds)} of compute and {estimate.memory / MIB:.0f} "
                f"MiB on this worker; through this endpoint only requests within {limits.fast_seconds:g} s and "
                f"{limits.fast_memory_mb} MiB are answered (slow ones are jobs, which it cannot poll): "
                f"{self._advice(estimate, limits.fast_seconds)}",
                **{**about, "limit_s": limits.fast_seconds, "limit_mb": limits.fast_memory_mb},
            )  # fmt: skip
        if estimate.memory > memory:
            raise OverBudget(
                f"this request would hold about {estimate.memory / MIB:,.0f} MiB at once on this worker; a request "
                f"may hold {limits.job_memory_mb} MiB (job_memory_mb): send a smaller input or fewer frames, or ask "
                f"for fewer layers, channels or targets",
                **about,
            )  # fmt: skip
        slow = estimate.seconds - sum(estimate.parts.get(m, 0.0) for m in optimizations(req))
        if slow > limits.max_busy_seconds:
            raise OverBudget(
                f"this request would take about {_seconds(estimate.seconds)} of compute on this worker "
                f"({self._parts(estimate)}); a request gets {limits.max_busy_seconds} s (max_busy_seconds): "
                f"{self._advice(estimate, limits.max_busy_seconds)}",
                **about, largest=self._largest(estimate, limits.max_busy_seconds),
            )  # fmt: skip

    @staticmethod
    def _parts(estimate: Estimate) -> str:
        """The largest parts of an estimate, in words: ``gradcam 12 s, decode 0.31 s``."""
        top = sorted(estimate.parts.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{name} {_seconds(s)}" for name, s in top)

    @staticmethod
    def _largest(estimate: Estimate, limit: float) -> dict[str, int]:
        """For each mode whose cost grows with an option, the largest value of that option that fits ``limit``
        (what grows with it scaled to the room the rest leaves; 0: not even 1 fits)."""
        out = {}
        for option, value, grows in estimate.knobs.values():
            room = limit - (estimate.seconds - grows)
            if grows > 0:
                out[option] = max(0, int(value * room / grows)) if room > 0 else 0
        return out

    def _advice(self, estimate: Estimate, limit: float) -> str:
        largest = {option: n for option, n in self._largest(estimate, limit).items() if n}
        if largest:
            return "ask for " + " and ".join(f"{option}={n} or fewer" for option, n in largest.items())
        return "use a lighter method, fewer channels or frames, or a smaller input"

    # -- running requests here ----------------------------------------------------------------------------------

    def compute(
        self, reqs: Mapping[int, VizRequest], replies: list[Reply | None], optimize: bool = True,
        served: Served | None = None,
    ) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], dict[int, torch.Tensor | None]]:  # fmt: skip
        """Run ``reqs`` here: decode each input, the batched passes, the shared forward passes, the static modes
        and (``optimize``) the optimizations within ``max_busy_seconds``, on ``served`` (default the service's own;
        a job's thread passes a copy whose model has hooks of its own). Returns each request's results by mode,
        what was read of its video, and its input; a request that fails gets its reply in ``replies``."""
        served = served or self.served
        deadline = time.monotonic() + self.limits.max_busy_seconds
        inputs: dict[int, dict[str, Any]] = defaultdict(dict)  # what was read of each video input
        jobs: dict[int, tuple[VizRequest, torch.Tensor | None]] = {}
        for i, req in reqs.items():
            with _answering(replies, [i], "decoding", UNREADABLE):
                jobs[i] = (req, self._input(req, inputs[i], served) if req.data is not None else None)
        results: dict[int, dict[str, Any]] = defaultdict(dict)
        predicted = self._run_batched(jobs, replies, results, served)
        # A batched (gradient) pass already classified its requests: the shared forward pass is needed only for
        # feature maps then. Requests that already failed need no forward pass at all.
        plain = {
            i: job
            for i, job in jobs.items()
            if replies[i] is None and job[1] is not None and (i not in predicted or self._captures(job[0]))
        }
        captured = self._run_forward(plain, replies, predicted, served)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if replies[i] is not None:
                    break
                with _answering(replies, [i], name):
                    if isinstance(mode, ForwardMode):
                        acts = captured.get(i, {})
                        results[i][name] = mode.present(served, req.values[name], predicted[i], acts)
                    elif isinstance(mode, StaticMode):
                        results[i][name] = mode.present(served, req.values[name])
                    elif isinstance(mode, OptimizeMode) and optimize:
                        results[i][name] = mode.run(served, req.values[name], x, deadline - time.monotonic())
        reads = {i: read for i, read in inputs.items() if read}
        return results, reads, {i: x for i, (_, x) in jobs.items()}

    def decode(self, req: VizRequest, served: Served | None = None) -> torch.Tensor:
        """The normalized input of ``req`` (see :meth:`_input`)."""
        return self._input(req, {}, served or self.served)

    def _input(self, req: VizRequest, info: dict[str, Any], served: Served) -> torch.Tensor:
        """The normalized input of ``req``: an image ``[3, H, W]``, or for a video model a clip ``[3, T, H, W]``
        (``info`` gets what was read of a video file)."""
        limits, spec, data = self.limits, self.spec, req.data
        if spec.modality == "video":
            if data.startswith(NPY_MAGIC):
                return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side, rank=4,
                                max_frames=self.video_limits.max_frames)  # fmt: skip
            if not is_video(data):
                raise not_a_video(spec.arch, data)
            pre = spec.preprocess
            frames, start, seconds = req.clip["frames"], req.clip["start"], req.clip["clip"]
            clip, read = read_clip(data, frames=frames, start=start, clip=seconds, fps=pre.fps,
                                   limits=self.video_limits, fit=self._fit_frame)  # fmt: skip
            info.update(read)
            return self._video_transform(clip)
        if data.startswith(NPY_MAGIC):
            return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side)
        return served.transform(read_image(data, max_pixels=limits.max_image_pixels, **(self._fit or {})))

    @staticmethod
    def _captures(req: VizRequest) -> list[str]:
        return [n for m in req.modes if isinstance(MODES[m], ForwardMode) for n in MODES[m].captures(req.values[m])]

    def _run_forward(self, jobs, replies, predicted, served: Served) -> dict[int, dict[str, torch.Tensor]]:
        """One forward pass per input shape that classifies and captures every layer any request asked for; fills
        ``predicted`` and returns each request's captured outputs."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, x) in jobs.items():
            groups[tuple(x.shape)].append(i)
        captured: dict[int, dict[str, torch.Tensor]] = {}
        for members in groups.values():
            layers = sorted({name for i in members for name in self._captures(jobs[i][0])})
            with _answering(replies, members, "the forward pass"):
                batch = torch.stack([jobs[i][1] for i in members]).to(served.device, non_blocking=True)
                probs, acts = forward(served.model, batch, layers)
                probs, acts = probs.cpu(), {k: v.cpu() for k, v in acts.items()}
                for k, i in enumerate(members):
                    predicted[i] = probs[k]
                    captured[i] = {name: acts[name][k] for name in self._captures(jobs[i][0])}
        return captured

    def _run_batched(self, jobs, replies, results, served: Served) -> dict[int, torch.Tensor]:
        """The batched modes, one pass per group of requests that share the mode's group key and the input shape;
        each row keeps its own target. Returns the class probabilities the passes computed on the way. A cap only
        the batch can check (patches, CAM passes, time budget) fails every request of the group."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if isinstance(mode, BatchedMode) and x is not None:
                    groups[(name, mode.group(req.values[name]), tuple(x.shape))].append(i)
        predicted: dict[int, torch.Tensor] = {}
        for (name, _, shape), group in groups.items():
            group = [i for i in group if replies[i] is None]
            if not group:
                continue
            rows = MODES[name].rows(served, jobs[group[0]][0].values[name], shape)  # memory bounds the batch
            for start in range(0, len(group), rows):
                members = group[start : start + rows]
                with _answering(replies, members, name):
                    x = torch.stack([jobs[i][1] for i in members]).to(served.device, non_blocking=True)
                    entries = MODES[name].run(served, x, [jobs[i][0].values[name] for i in members])
                    for i, (entry, probs) in zip(members, entries, strict=True):
                        results[i][name] = entry
                        if probs is not None:
                            predicted[i] = probs
        return predicted

    # -- one reply ----------------------------------------------------------------------------------------------

    def answer(self, req: VizRequest, results: dict[str, Any], read: dict[str, Any] | None = None) -> Reply:
        """The reply of ``req`` from its modes' ``results`` (``read``: what was read of a video): its JSON payload
        (pictures and arrays as bytes until an edge encodes them), or for ``format=png`` and the animation formats
        the first picture itself. Raises :class:`cnnviz.InputTooLarge` when the JSON would be over
        ``max_response_bytes``."""
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
        size = json_size(out)
        if size > self.limits.max_response_bytes:
            raise InputTooLarge(
                f"the response would be {size / 2**20:.1f} MiB, over this server's limit of "
                f"{self.limits.max_response_bytes / 2**20:.1f} MiB (max_response_size); ask for fewer layers or "
                f"channels, or leave out raw=true"
            )
        return Reply(200, out)
