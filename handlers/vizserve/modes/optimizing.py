"""What actmax and invert share: the optimization options, the settings they become, the step-wise run that the job
scheduler (:mod:`vizserve.jobs`) interleaves, and the progress previews."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from cnnviz import ActmaxResult, InvalidInput, InvalidOption, Optimization

from .. import render
from ..options import Option
from ..passes import Passes, activation_bytes, picture_pixels
from ..served import Served
from .base import OptimizeMode

STEPS = Option("steps", "int", 256, "optimization steps", 1, 2048)
SIZE = Option("size", "int", lambda s: s.spec.input_shape[-1], "image side in pixels", 16, 512,
              default_text="the model's input size")  # fmt: skip
PARAM = Option("param", "choice", "fft", "fft: Lucid's decorrelated Fourier parameterization; pixel",
               choices=("fft", "pixel"))  # fmt: skip
OPTIMIZER = Option("optimizer", "choice", "adam", "adam, or sgd with momentum 0.9", choices=("adam", "sgd"))
LR = Option("lr", "float", 0.05, "learning rate", 0.0, 10.0, above=True)
SEED = Option("seed", "int", 0, "the same seed gives the same images", 0, 2**31 - 1)
INIT = Option("init", "choice", "noise", "start from noise, zeros (mid-grey) or the uploaded image",
              choices=("zeros", "noise", "image"))  # fmt: skip
L1 = Option("l1", "float", 0.0, "L1 penalty on image - 0.5 ('no ink')", 0.0, 100.0)
L2 = Option("l2", "float", 0.0, "L2 penalty on image - 0.5", 0.0, 100.0)
TV = Option("tv", "float", 0.0, "total-variation penalty", 0.0, 100.0)
BLUR_EVERY = Option("blur_every", "int", 0, "blur the pixels every k steps (pixel parameterization)", 0, 1000)
TRANSFORMS = Option("transforms", "bool", True, "pad, jitter, scale and rotate each step (transformation robustness)")
PRECISION = Option("precision", "choice", "auto", "auto: bfloat16 where the device computes it natively, else "
                   "float32", choices=("auto", "float32", "bfloat16"))  # fmt: skip
TIME_JITTER = Option("time_jitter", "int", lambda s: 4 if s.spec.modality == "video" else 0, "video models: shift "
                     "the clip in time by up to this many frames each step (circularly)", 0, 8,
                     default_text="4 for video models, 0 for images", modality="video")  # fmt: skip
TV_TIME = Option("tv_time", "float", 0.0, "video models: penalty on the change from frame to frame (temporal "
                 "smoothness, Feichtenhofer et al. 2019)", 0.0, 100.0, modality="video")  # fmt: skip
TIME_CYCLES = Option("time_cycles", "float", lambda s: 0.5 if s.spec.modality == "video" else 0.0, "video models, "
                     "param=fft: temporal low-pass of the spectrum, amplitudes / (1 + (f_t / this)^2) with f_t in "
                     "cycles per clip (0: none)", 0.0, 64.0,
                     default_text="0.5 for video models, 0 for images", modality="video")  # fmt: skip

# actmax makes both 2 (modes/actmax.py, ACTMAX_DEFAULTS); invert runs without transforms by default.
ROBUSTNESS = Option("robustness", "float", 1.0, "multiplies the transforms' pad, jitter, scale and rotation (1: "
                    "lucent's, scaled to the image)", 0.0, 4.0, default_text="1")  # fmt: skip
COPIES = Option("copies", "int", 1, "transformed copies of the image per step, each its own draw (costs that many "
                "forward and backward passes)", 1, 8)  # fmt: skip

#: Options of both optimizing modes (invert changes two defaults).
COMMON = (STEPS, SIZE, PARAM, OPTIMIZER, LR, SEED, INIT, L1, L2, TV, BLUR_EVERY, TRANSFORMS, ROBUSTNESS, COPIES,
          PRECISION, TIME_JITTER, TV_TIME, TIME_CYCLES)  # fmt: skip


class Optimizing(OptimizeMode):
    """Base of actmax and invert: :meth:`start` sets an optimization up (on ``served.model``, which a job replaces
    by a copy with hooks of its own), :meth:`present` turns its result into the response entry."""

    def finish(self, values, served, fields):
        video = served.spec.modality == "video"
        if not video and ("tv_time" in fields or "time_jitter" in fields or "time_cycles" in fields):
            raise InvalidOption(
                "options 'tv_time', 'time_jitter' and 'time_cycles' are for video models; this one takes images"
            )
        # each shapes one parameterization only: asked for with the other, it would be ignored without a word
        if values["time_cycles"] > 0 and "time_cycles" in fields and values["param"] != "fft":
            raise InvalidOption("option 'time_cycles' low-passes the Fourier parameterization (param=fft); with "
                                f"param={values['param']} use tv_time for smoothness over time")  # fmt: skip
        if values["blur_every"] > 0 and values["param"] != "pixel":
            raise InvalidOption(f"option 'blur_every' blurs pixel parameters (param=pixel); param={values['param']} "
                                "is smooth already: leave blur_every out")  # fmt: skip
        if video and values["init"] == "image":
            raise InvalidOption("init=image starts from an uploaded clip, which video models cannot take yet")
        if values["init"] == "image" and "data" not in fields:
            raise InvalidInput("init=image starts from the uploaded image: send one in field 'data'")
        return values

    def start(self, served: Served, values: Mapping[str, Any], x: torch.Tensor | None) -> Optimization:
        raise NotImplementedError

    def present(self, served: Served, values: Mapping[str, Any], result: ActmaxResult) -> Any:
        raise NotImplementedError

    def targets(self, values: Mapping[str, Any]) -> int:
        """How many images one step optimizes (for the cost estimate)."""
        return 1

    def image_shape(self, served: Served, values: Mapping[str, Any]) -> tuple[int, ...]:
        """One optimized image ``[3, size, size]`` (a video ``[3, T, size, size]``)."""
        frames = served.spec.input_shape[1:-2]
        return (served.spec.input_shape[0], *frames, values["size"], values["size"])

    def cost(self, served, values, shape, memory):
        """Its seconds are the cost model's (an optimization's own calibration); its memory: the passes of one
        step (targets x copies images, the copies of up to 4 images in one pass), the images' parameters with Adam's
        two moments and their gradient, a bfloat16 copy of the weights, and the answer's pictures."""
        k, image = self.targets(values), self.image_shape(served, values)
        copies = values["copies"] if values["transforms"] else 1
        batch = k * copies if k * copies <= 4 else k
        bf16 = values["precision"] == "bfloat16" or (values["precision"] == "auto" and served.bf16)
        weights = sum(p.numel() for p in served.model.parameters()) * 2 if bf16 else 0
        pictures = picture_pixels(*image[-2:], k, image[1] if len(image) == 4 else 1)
        raw = k * math.prod(image) * 4 if values["raw"] else 0
        return Passes(memory=activation_bytes(served, image, True) * batch, held_bytes=k * math.prod(image) * 4 * 5
                      + weights + pictures * 3, raw_bytes=raw, knob=("steps", values["steps"]))  # fmt: skip

    def run(self, served, values, x, budget_s, progress=None):
        """The whole optimization in a row, within ``budget_s`` seconds (in-process use; the server runs jobs)."""
        opt = self.start(served, values, x)
        opt.cfg = replace(opt.cfg, budget_s=max(0.0, budget_s))
        return self.present(served, values, opt.run(progress))

    @staticmethod
    def settings(served: Served, values: Mapping[str, Any], x: torch.Tensor | None, budget_s: float | None) -> dict:
        """Keyword arguments of :class:`cnnviz.Settings` for these values."""
        names = ("size", "steps", "param", "optimizer", "lr", "transforms", "l1", "l2", "tv", "blur_every", "seed")
        base: dict[str, Any] = {k: values[k] for k in names}
        base.update(
            init_weight=values.get("init_weight", 0.0),
            mean=tuple(served.spec.preprocess.mean),
            std=tuple(served.spec.preprocess.std),
            budget_s=None if budget_s is None else max(0.0, budget_s),
            precision=values["precision"] if values["precision"] != "auto" else
            ("bfloat16" if served.bf16 else "float32"),
            frames=served.spec.input_shape[1] if served.spec.modality == "video" else None,
            time_jitter=values["time_jitter"],
            tv_time=values["tv_time"],
            time_cycles=values["time_cycles"],
            strength=values["robustness"],
            copies=values["copies"],
        )  # fmt: skip
        if values["init"] == "image":
            base["init"] = served.seen(x)
        elif values["init"] == "zeros":
            base["init_noise"] = 0.0
        elif values["param"] == "pixel":
            base["init_noise"] = 0.1  # fft's default noise is Lucid's 0.01
        return base

    @staticmethod
    def entry(
        values, result, k: int, names=("start", "end"), sign: float = 1.0, title: str = "", **about
    ) -> dict[str, Any]:
        """The response entry of image ``k``; its picture under ``title`` (with a note when the run stopped
        early)."""
        if result.stopped_early:
            title += f"; stopped early after {result.steps} steps"
        entry = {
            **about,
            names[0]: sign * float(result.start[k]),
            names[1]: sign * float(result.end[k]),
            "steps": result.steps,
            "seconds": round(result.seconds, 3),
            "stopped_early": result.stopped_early,
            "image": render.image_png(result.images[k], title),
        }
        if values["raw"]:
            entry["raw"] = render.npy_bytes(result.images[k])
        return entry


def preview(images: torch.Tensor) -> bytes:
    """A small PNG of the images being optimized (at most 16; a video's middle frame), for progress reports."""
    with torch.no_grad():
        shown = images[:16].detach()
        if shown.dim() == 5:
            shown = shown[:, :, shown.shape[2] // 2]
        return render.preview_png(shown)
