"""saliency: gradient attributions to the input pixels, through Captum."""

from __future__ import annotations

import torch

from cnnviz import BASELINES, SALIENCY_METHODS, attribution_map, baseline, saliency

from ..options import Option
from .base import BatchedMode
from .shared import METHOD, TARGET, attribution_entry, class_index, pick_method, targets_of

SAMPLES = Option("samples", "int", 16, "SmoothGrad: noisy copies per input", 1, 64)
NOISE = Option("noise", "float", 0.15, "SmoothGrad: noise as a fraction of the input's range", 0.0, 1.0)
IG_STEPS = Option("ig_steps", "int", 32, "integrated gradients: steps from the baseline to the input", 1, 128)
BASELINE = Option("baseline", "choice", "black", "integrated gradients: the starting input (zero: the mean image "
                  "in normalized units)", choices=BASELINES)  # fmt: skip


class SaliencyMode(BatchedMode):
    name = "saliency"
    summary = (
        "gradient attributions to the input: vanilla, SmoothGrad, integrated gradients, guided backprop, deconvnet"
    )
    options = (METHOD.but(None, "vanilla"), TARGET, SAMPLES, NOISE, IG_STEPS, BASELINE)
    needs_input = True
    claims = {"method": SALIENCY_METHODS}

    def finish(self, values, served, fields):
        values["method"] = pick_method(values, SALIENCY_METHODS, "vanilla")
        values["target"] = -1 if values["target"] is None else class_index(values["target"], served.labels)
        return values

    def group(self, values):
        return tuple(values[k] for k in ("method", "samples", "noise", "ig_steps", "baseline"))

    def run(self, served, x, values):
        v0 = values[0]
        with torch.inference_mode():
            logits = served.model(x)
        targets = targets_of(values, logits)
        base = baseline(v0["baseline"], served.mean, served.std)
        attributions = saliency(
            served.model, x, targets, v0["method"], samples=v0["samples"], noise=v0["noise"], steps=v0["ig_steps"],
            baseline=None if base is None else base.to(x.device)[None],
        )  # fmt: skip
        maps = attribution_map(attributions, v0["method"])
        probs = logits.softmax(-1).cpu()
        return [
            (attribution_entry(served, v, x[k], maps[k], int(targets[k]), probs[k], method=v0["method"]), probs[k])
            for k, v in enumerate(values)
        ]
