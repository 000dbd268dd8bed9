"""What a request will cost on this worker, estimated before any work is done: seconds of compute and bytes of memory.

Every mode declares its cost next to its options (:meth:`vizserve.modes.base.Mode.cost`), as :class:`Passes`: how
many inputs of the request's shape it runs forward, and forward and backward, how many it holds at once, what it
keeps and how many pixels of pictures it encodes (optimizations give their seconds from their own calibration). The
cost model turns that into seconds with what it measured of this model at load (:meth:`CostModel.calibrate`:
forward and backward passes at two sizes and two batch sizes, PNG encoding, and an optimization's steps), into bytes
with the layer table (every output of one forward pass, scaled by the input's size), and adds what decoding the
input costs, from its header (:func:`probe`: decoded pixels x frames, before a pixel is decoded).

The admission (:meth:`vizserve.pipeline.VizService.handle`) reads the estimate: a fast request runs inline, a slow
one becomes a job or is refused (422) with its estimate, the limit and what would fit. Jobs correct the estimates
that follow them by what they measured (:meth:`CostModel.learn`).

Where this departs from exactness, on purpose: a pass's time is linear in the input's elements (a classifier head's
fixed cost included at the model's size) and in the batch (fitted at 1 and 4); memory counts the outputs of every
module call once (autograd keeps about that many for a backward) and the largest one three times (a pass without
autograd holds its input, its output and a workspace), both of float32. The tests hold estimates to a factor of 3 of
what is measured, for every mode family.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from cnnviz import OverBudget, shared_copy, wait_for

from .decode import NPY_MAGIC, npy_shape, open_image
from .modes import MODES, ForwardMode, OptimizeMode
from .passes import Passes, activation_bytes, scale_of
from .request import VizRequest, parse_request
from .served import Served

__all__ = ["CostModel", "Estimate", "Passes", "Probe", "optimizations", "probe"]

log = logging.getLogger(__name__)

MIB = 2**20
#: Decoding, in seconds a decoded pixel, on one thread (measured on this project's 2-core CPU through the service: a
#: 720p H.264 clip 0.46 s for 48 frames decoded and 16 taken, a DCI 4K one 3.0 s for 17 and 16): JPEG and PNG about
#: as much.
DECODE_S_PER_PIXEL = 1e-8
#: A taken frame's conversion to RGB and its resize, a pixel of the source.
FRAME_S_PER_PIXEL = 8e-9
#: Frames a video decoder holds besides the one decoded (references, threads), as full frames of 1.5 bytes a pixel
#: (16 frames of 4K through the motion model took 332 MiB at the peak).
DECODER_FRAMES = 16
#: Before ``start`` a decoder starts at the keyframe before it: up to this many seconds more (a common GOP).
PREROLL_S = 2.0


def optimizations(req: VizRequest) -> list[str]:
    """The optimizing modes a request asks for (actmax, invert), in its order."""
    return [m for m in req.modes if isinstance(MODES[m], OptimizeMode)]


@dataclass(frozen=True)
class Probe:
    """What an input will be, read from its header before anything is decoded.

    ``kind``: ``image``, ``npy`` or ``video``; ``shape``: the model input it becomes ``[C, *S]``; ``pixels``:
    pixels decoded in all (frames x frame size for a video); ``peak``: bytes decoding holds at once; ``seconds``:
    decoding's estimate; ``what``: the input in words, for messages."""

    kind: str
    shape: tuple[int, ...]
    pixels: int = 0
    peak: int = 0
    seconds: float = 0.0
    what: str = ""


@dataclass(frozen=True)
class Estimate:
    """One request's estimate: ``seconds`` of compute, ``memory`` (bytes at the peak), ``response`` (bytes of its
    answer at least: its arrays, which do not compress); ``parts``: seconds by part (``decode``, a mode's name),
    ``knobs``: each mode's option that its cost grows with."""

    seconds: float
    memory: float
    response: float
    parts: dict[str, float] = field(default_factory=dict)
    knobs: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # mode: (option, value, its seconds)
    optimization: dict[str, Any] | None = None  # the optimizations' own estimate (jobs step them)

    def about(self) -> dict[str, Any]:
        """What a client is told of it (in a 202, a 422)."""
        return {"estimate_s": round(self.seconds, 2), "estimate_mb": round(self.memory / MIB, 1)}


# -- the input, from its header ------------------------------------------------------------------------------------


def probe(req: VizRequest, served: Served, video_limits) -> Probe | None:
    """What the request's input will cost to decode and what it becomes, from its header (cheap and bounded: the
    image header, the .npy header, or the video container's header and chunk walk). ``None`` without an input.
    Raises the same errors decoding would for what the header already shows (too many pixels, not a video)."""
    data = req.data
    if data is None:
        return None
    spec, limits = served.spec, served.limits
    video = spec.modality == "video"
    if data.startswith(NPY_MAGIC):  # the same checks as reading it: a bad header is the same 4xx, at once
        shape, _, _ = npy_shape(
            data,
            min_side=spec.min_side or 1,
            max_side=limits.max_input_side,
            rank=4 if video else 3,
            max_frames=video_limits.max_frames if video else None,
        )
        return Probe("npy", tuple(shape), peak=len(data) * 2, what=f".npy array {shape}")  # fmt: skip
    if video:
        from .video import FrameResizer, is_video, not_a_video, probe_clip

        if not is_video(data):
            raise not_a_video(spec.arch, data)
        pre = spec.preprocess
        info = probe_clip(data, frames=req.clip["frames"], start=req.clip["start"], clip=req.clip["clip"],
                          fps=pre.fps, limits=video_limits,
                          fit=FrameResizer(pre.resize, pre.crop, pre.interpolation))  # fmt: skip
        frame = info["width"] * info["height"]
        decoded = info["decoded"]
        shape = (spec.input_shape[0], req.clip["frames"], *spec.input_shape[2:])
        seconds = decoded * frame * DECODE_S_PER_PIXEL + req.clip["frames"] * frame * FRAME_S_PER_PIXEL
        peak = int(frame * 1.5 * DECODER_FRAMES + frame * 3 * 3 + math.prod(shape) * 4 * 2)  # RGB, its copy, resize
        return Probe("video", shape, decoded * frame, peak, seconds, info["what"])
    im = open_image(data, max_pixels=limits.max_image_pixels)  # the same checks as decoding it
    width, height, fmt = im.size[0], im.size[1], im.format or "image"
    pixels = width * height
    if fmt == "JPEG":  # decoded at a reduced size: down to twice the resize's short side (vizserve.decode)
        short = max(1, min(width, height))
        ratio = short // max(1, 2 * min(spec.preprocess.resize_sizes))  # libjpeg scales by 1/2, 1/4 or 1/8
        reduce = 1 << min(3, max(0, ratio.bit_length() - 1))
        pixels //= reduce * reduce
    return Probe("image", tuple(spec.input_shape), pixels, pixels * 8, pixels * DECODE_S_PER_PIXEL,
                 f"{fmt} {width}x{height}")  # fmt: skip


# -- pictures -------------------------------------------------------------------------------------------------------


@functools.cache
def picture_cost(rounds: int = 3) -> float:
    """Seconds to draw and encode a pixel of a picture, measured once in a process (it depends on the machine, not
    the model): a map's two pictures at 224 px (the input beside its overlay, and the map: 3 x 224 x 224 pixels,
    titles and colour bars included; no picture is under 224 px on its short side), the least of ``rounds`` after
    one to warm up."""
    from .render import attribution_pngs  # what most pictures go through: blend, colour bar, title, PNG

    noise = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        attribution_pngs(noise, noise[0], title="calibration", ticks=("0", "1"))
        times.append(time.perf_counter() - t0)
    return min(times[1:]) / (3 * 224 * 224)


# -- the model ------------------------------------------------------------------------------------------------------


class CostModel:
    """The cost of requests to one served model: calibrated once, rescaled by what jobs measure.

    Attributes:
        passes: seconds of a pass, measured (:meth:`calibrate`): ``fwd_fixed``, ``fwd_per`` (an input of the model's
            size), ``fwd_batch`` (each further input of a batch, over the first), and the same for ``grad_*``
            (forward and backward to the input).
        calibration: an optimization step's parts (seconds), or ``None`` before.
        scale: what the jobs' measured steps say of the optimization calibration (:meth:`learn`), 1 at first;
            ``pass_scale`` the same for passes.
    """

    def __init__(self, served: Served) -> None:
        self.served = served
        self.passes: dict[str, float] | None = None
        self.calibration: dict[str, float] | None = None
        self.scale = 1.0
        self.pass_scale = 1.0

    # -- calibration --------------------------------------------------------------------------------------------

    def calibrate(self, least_s: float = 2.0, most_rounds: int = 8) -> dict[str, float]:
        """Every calibration (:func:`picture_cost`, :meth:`calibrate_passes`, :meth:`calibrate_optimization`); the
        TorchServe handler calls it at model load, before any request."""
        picture_cost()
        self.calibrate_passes()
        return self.calibrate_optimization(least_s, most_rounds)

    def calibrate_passes(self, least_s: float = 1.0, most_rounds: int = 12) -> dict[str, float]:
        """Seconds of a forward pass at the model's input size and at half its side and of a batch of four, and of
        a forward and backward pass of one input: each the least over rounds of all of them in turn (after one to
        warm up; at least two, and until ``least_s`` seconds were spent or ``most_rounds`` ran: a busy moment slows
        one round of each, not every run of one). Fitted as ``fixed + per x elements`` and ``+ batch x (inputs - 1)
        x elements``, a further input of a batch costing between a sixteenth of one input and one input; the
        backward kind scaled as the forward one is (R3D-18's calibration takes 10 s on 2 cores as it is). Pictures
        are :func:`picture_cost`'s. Measured on the first estimate that needs a pass (the TorchServe handler: at
        model load)."""
        if self.passes is not None:
            return self.passes
        served = self.served
        spec, device = served.spec, served.device
        full = tuple(spec.input_shape)
        half = (*full[:-2], max(spec.min_side or 1, full[-2] // 2), max(spec.min_side or 1, full[-1] // 2))
        model = shared_copy(served.model, hooks=False)

        def timed(shape, batch: int, grad: bool) -> float:
            x = torch.zeros((batch, *shape), device=device)
            t0 = time.perf_counter()
            if grad:
                with torch.inference_mode(False), torch.enable_grad():
                    model(x.clone().requires_grad_(True)).sum().backward()
            else:
                with torch.inference_mode():
                    model(x)
            wait_for(device)
            return time.perf_counter() - t0

        runs: dict[tuple, list[float]] = {("fwd", full, 1): [], ("fwd", half, 1): [], ("fwd", full, 4): [],
                                          ("grad", full, 1): []}  # fmt: skip
        for key in runs:  # warm-up: oneDNN builds its kernels for each new shape on the first pass
            timed(key[1], key[2], key[0] == "grad")
        t0 = time.perf_counter()
        rounds = 0
        while rounds < 2 or (time.perf_counter() - t0 < least_s and rounds < most_rounds):
            for kind, shape, batch in runs:
                runs[(kind, shape, batch)].append(timed(shape, batch, kind == "grad"))
            rounds += 1
        best = {key: min(times) for key, times in runs.items()}
        one, small, four = best[("fwd", full, 1)], best[("fwd", half, 1)], best[("fwd", full, 4)]
        ratio = math.prod(half[1:]) / math.prod(full[1:])
        share = min(1.0, max((one - small) / max(1e-6, 1 - ratio), one / 8) / max(one, 1e-9))  # of one: per element
        extra = min(1.0, max((four - one) / 3, one / 16) / max(one, 1e-9))  # a further input of a batch, of one
        out: dict[str, float] = {}
        for kind, whole in (("fwd", one), ("grad", max(best[("grad", full, 1)], one))):
            out[f"{kind}_per"] = whole * share
            out[f"{kind}_fixed"] = whole * (1 - share)
            out[f"{kind}_batch"] = whole * extra
        self.passes = out
        log.info("%s: a forward pass %.4f s, forward and backward %.4f s (one input of %s; %d rounds)", served.name,
                 out["fwd_fixed"] + out["fwd_per"], out["grad_fixed"] + out["grad_per"], full, rounds)  # fmt: skip
        return out

    def pass_seconds(self, shape: Sequence[int], inputs: float, batch: int, grad: bool) -> float:
        """Seconds for ``inputs`` inputs of ``shape`` run in passes of ``batch``."""
        if inputs <= 0:
            return 0.0
        p, kind = self.calibrate_passes(), "grad" if grad else "fwd"
        n = scale_of(self.served, shape)
        one = p[f"{kind}_fixed"] + p[f"{kind}_per"] * n
        batch = max(1, min(batch, math.ceil(inputs)))
        per_pass = one + p[f"{kind}_batch"] * n * (batch - 1)
        return math.ceil(inputs / batch) * per_pass * self.pass_scale

    def calibrate_optimization(self, least_s: float = 2.0, most_rounds: int = 8) -> dict[str, float]:
        """What an optimization costs on this worker, measured once (cached): actmax of one class image at the
        model's input size and at half of it, with the default options but one transformed copy a step (after a
        warm-up); the set-up, the shortest of five steps and the final scoring and encoding, each the least over
        rounds of both sizes (at least two, and until ``least_s`` seconds were spent or ``most_rounds`` ran: a
        small model's rounds take milliseconds, and a calibration taken while the machine was busy for a moment set
        every estimate 3x too high), fitted as ``fixed + per_image x n`` (``n``: images of the input size)."""
        if self.calibration is None:
            spec = self.served.spec
            side = max(16, spec.input_shape[-1])  # actmax's smallest size
            half = max(spec.min_side or 16, 16, side // 2)
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
            self.calibration = cost
            log.info("%s: optimization cost per step %.4f s + %.4f s an image (%s px)", self.served.name,
                     cost["step_fixed_s"], cost["step_per_image_s"], side)  # fmt: skip
        return self.calibration

    def _values(self, size: int, steps: int | None = None) -> dict[str, Any]:
        fields = {"mode": "actmax", "channel": "0", "size": str(size), "copies": "1"}
        if steps is not None:
            fields["steps"] = str(steps)
        return parse_request(fields, self.served).values["actmax"]

    def _warm_up(self, size: int, least: int = 12, most: int = 40, seconds: float = 20.0) -> None:
        """Steps until they are steady: the first steps of a process are 10 to 20 times slower on a CPU (measured
        here: about 11 steps, whatever the shape), which would make every estimate that much too high."""
        served = replace(self.served, model=shared_copy(self.served.model, hooks=False))
        with torch.inference_mode(False):
            opt = MODES["actmax"].start(served, self._values(size), None)
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
        served = replace(self.served, model=shared_copy(self.served.model, hooks=False))
        mode = MODES["actmax"]
        values = self._values(size, steps=5)
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

    # -- estimates ----------------------------------------------------------------------------------------------

    def estimate(
        self, req: VizRequest, source: Probe | None = None, memory: float | None = None, optimize: bool = True
    ) -> Estimate:
        """The request's estimate: decoding its input (``source``, from :func:`probe`), a forward pass shared by
        the forward modes, each mode's passes (with passes of at most the inputs that fit ``memory``, default the
        job memory limit), the encoding of its pictures, and (``optimize``) its optimizations
        (:meth:`optimization_estimate`; in-process, without jobs, they run within the budget and are not estimated).
        Memory is the largest of decoding, the largest pass and an optimization's, plus what the modes keep."""
        served, limits = self.served, self.served.limits
        memory = memory if memory is not None else limits.job_memory_mb * MIB
        for v in req.values.values():  # what the modes size their passes by (vizserve.passes.memory_of)
            v["_memory"] = memory
        per_pixel = picture_cost()
        shape = source.shape if source is not None else None
        parts: dict[str, float] = {}
        knobs: dict[str, tuple[str, float, float]] = {}
        peaks = [source.peak if source is not None else 0]
        held = response = 0.0
        if source is not None:
            parts["decode"] = source.seconds
            held += math.prod(shape) * 4
        shared = [m for m in req.modes if isinstance(MODES[m], ForwardMode)]
        if shared and shape is not None:
            parts["forward"] = self.pass_seconds(shape, 1, 1, False)
            peaks.append(activation_bytes(served, shape, False))
        for name in req.modes:
            cost = MODES[name].cost(served, req.values[name], shape, memory)
            passes = 0.0
            if shape is not None:
                passes += self.pass_seconds(shape, cost.inputs, cost.batch, False)
                passes += self.pass_seconds(shape, cost.grad_inputs, cost.batch, True)
                if cost.inputs or cost.grad_inputs:
                    peaks.append(activation_bytes(served, shape, cost.grad) * cost.batch)
            seconds = cost.seconds + passes
            seconds += cost.pictures * per_pixel
            # a mode's pictures are drawn in float RGB before they are bytes (at most 3 a pixel, kept); an array is
            # copied, written and encoded
            peaks.append(max(cost.memory, cost.pictures * 12))
            held += cost.held_bytes + cost.raw_bytes * 3 + cost.pictures * 3
            response += cost.raw_bytes * 4 / 3
            parts[name] = seconds
            if cost.knob is not None:  # what grows with the option: the passes (an optimization: its steps)
                knobs[name] = (*cost.knob, passes or cost.seconds)
        opt = None
        if optimize and optimizations(req):
            opt = self.optimization_estimate(req)
            for name in optimizations(req):
                parts[name] = parts.get(name, 0.0) + opt["exact_s"] / len(optimizations(req))
                if name in knobs:
                    knobs[name] = (*knobs[name][:2], opt["exact_s"] / len(optimizations(req)))
        return Estimate(sum(parts.values()), max(peaks) + held, response, parts, knobs, opt)

    def optimization_estimate(self, req: VizRequest) -> dict[str, Any]:
        """The compute the request's optimizations will take, from :meth:`calibrate_optimization`: with ``n`` =
        targets x (size / input size)^2, steps x copies x (fixed + per image x n) plus the set-up and the final
        scoring and encoding at the same scale. Over ``refuse_factor`` x the budget, or when not even its set-up,
        one step and its answer fit the budget, ``"refusal"`` holds the :class:`cnnviz.OverBudget` (422) that the
        admission raises for a job; between 1x and ``refuse_factor`` x, the job runs and stops early with what it
        has."""
        cost, limits, scale = self.calibrate_optimization(), self.served.limits, self.scale
        side = max(16, self.served.spec.input_shape[-1])  # as calibrated

        def part(name: str, n: float) -> float:
            return (cost[f"{name}_fixed_s"] + cost[f"{name}_per_image_s"] * n) * scale

        def step(v: Mapping[str, Any], n: float) -> float:  # each transformed copy is a forward and a backward
            return part("step", n) * (v["copies"] if v["transforms"] else 1)

        parts = []
        for name in optimizations(req):
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
        refusal = None
        if total > limit or one_step > limits.max_busy_seconds:
            room = limit - (total - own) - part("setup", n) - part("finish", n)
            fit = max(0, int(room / step_s)) if one_step <= limits.max_busy_seconds else 0
            targets = MODES[name].targets(v)
            advice = (f"at most {fit} steps fit at this size with {targets} targets" if fit else
                      f"not even one step fits the budget at this size with {targets} targets")  # fmt: skip
            refusal = OverBudget(
                f"this optimization would take about {total:,.0f} s of compute on this worker ({step_s:.3f} s a "
                f"step for {targets} targets at {v['size']} px, from steps measured on this model at {side} px, x "
                f"{v['steps']} steps; {one_step:.1f} s for its set-up, one step and its answer); a job gets "
                f"{limits.max_busy_seconds} s (max_busy_seconds) and is refused over {limits.refuse_factor} x that, "
                f"or when not one step fits; {advice}: ask for fewer steps, fewer targets or a smaller size",
                estimate_s=round(total, 1), limit_s=limit, budget_s=limits.max_busy_seconds, max_steps=fit,
            )  # fmt: skip
        return {**about, "reserve_s": reserve, "first_step_s": step_s, "exact_s": total, "scale": scale,
                "refusal": refusal}  # fmt: skip

    def learn(self, estimate: Mapping[str, Any], step_times: Sequence[float]) -> None:
        """Correct later estimates by what a job's steps took: the calibration at model load may have run while
        the machine was busy (every model of a server calibrates at once), which made estimates 3x too high. The
        shortest of the job's steps (at least 4) over the step it was estimated at rescales every part, between
        1/20 and 20 times the calibration."""
        if len(step_times) >= 4 and estimate["first_step_s"] > 0:
            scale = estimate["scale"] * min(step_times) / estimate["first_step_s"]
            self.scale = min(20.0, max(0.05, scale))

    def learn_passes(self, estimated_s: float, measured_s: float, scale: float) -> None:
        """The same for passes: a job of passes that took ``measured_s`` where ``estimated_s`` was estimated (at
        ``scale``) rescales later pass estimates, between 1/20 and 20 times the calibration; jobs under 0.2 s teach
        nothing (their time is mostly not passes)."""
        if estimated_s > 0 and measured_s >= 0.2:
            self.pass_scale = min(20.0, max(0.05, scale * measured_s / estimated_s))
