"""saliency: attributions to the input pixels, through Captum (gradients, DeepLift, SHAP, LRP, perturbations)."""

from __future__ import annotations

import torch

from cnnviz import (
    BASELINES,
    PERTURBATION_METHODS,
    SALIENCY_METHODS,
    SIGNED_METHODS,
    InvalidOption,
    attribution_map,
    baseline,
    lrp_problem,
    perturbations,
    saliency,
)

from ..options import Option
from ..passes import memory_of, pass_batch
from .base import BatchedMode
from .shared import (
    COLORMAP,
    FAITHFULNESS,
    FAITHFULNESS_STEPS,
    METHOD,
    OPACITY,
    TARGET,
    attribution_cost,
    attribution_entry,
    class_index,
    faithfulness_fields,
    pick_method,
    targets_of,
)

SAMPLES = Option("samples", "int", 16, "SmoothGrad, smoothgrad_sq, vargrad: noisy copies per input; deepliftshap, "
                 "gradientshap: baselines drawn around 'baseline'", 1, 64)  # fmt: skip
NOISE = Option("noise", "float", 0.15, "SmoothGrad and its variants, and the SHAP methods' baselines: noise as a "
               "fraction of the input's range", 0.0, 1.0)  # fmt: skip
IG_STEPS = Option("ig_steps", "int", 32, "integrated gradients: steps from the baseline to the input", 1, 128)
BASELINE = Option("baseline", "choice", "black", "the reference input of integrated gradients, DeepLift, the SHAP "
                  "methods, occlusion and feature ablation (zero: the mean image in normalized units)",
                  choices=BASELINES)  # fmt: skip
WINDOW = Option("window", "float", 0.125, "occlusion, feature_ablation: the patch side as a fraction of the "
                "input's short side (a video's patch spans every frame)", 0.01, 1.0)  # fmt: skip
STRIDE = Option("stride", "float", 0.5, "occlusion: the step between patches as a fraction of the patch side",
                0.1, 1.0)  # fmt: skip


class SaliencyMode(BatchedMode):
    name = "saliency"
    summary = (
        "attributions to the input: gradients (vanilla, SmoothGrad and its variants, integrated gradients, "
        "input x gradient, guided backprop, deconvnet), DeepLift, SHAP, LRP, occlusion, feature ablation"
    )
    options = (
        METHOD.but(None, "vanilla"), TARGET, SAMPLES, NOISE, IG_STEPS, BASELINE, WINDOW, STRIDE, FAITHFULNESS,
        FAITHFULNESS_STEPS, COLORMAP, OPACITY,
    )  # fmt: skip
    needs_input = True
    claims = {"method": SALIENCY_METHODS}

    def finish(self, values, served, fields):
        values["method"] = pick_method(values, SALIENCY_METHODS, "vanilla")
        values["target"] = -1 if values["target"] is None else class_index(values["target"], served.labels)
        if values["method"] == "lrp" and (problem := lrp_problem(served.model)):
            raise InvalidOption(f"method lrp cannot explain {served.spec.arch}: {problem}")
        return values

    def group(self, values):
        keys = ("method", "samples", "noise", "ig_steps", "baseline", "window", "stride", "faithfulness",
                "faithfulness_steps")  # fmt: skip
        return tuple(values[k] for k in keys)

    def rows(self, served, values, shape):
        return 1 << 30  # the passes hold at most pass_inputs inputs, however many rows: the rows need no split

    @staticmethod
    def pass_inputs(served, values, shape) -> int:
        """Inputs one pass holds, rows x samples: 32, or what fits the request's memory."""
        grad = values["method"] not in PERTURBATION_METHODS
        return pass_batch(served, shape, grad, memory_of(served, values), 32)

    def cost(self, served, values, shape, memory):
        """A forward pass for the logits, then the method's: one forward and backward pass (vanilla, input x
        gradient, guided backprop, deconvnet, LRP; DeepLift two: input and baseline), one a sample (SmoothGrad and
        its variants, GradientShap; DeepLiftShap two) or a path step (integrated gradients), or a forward pass a
        patch (occlusion, feature ablation)."""
        method, batch = values["method"], self.pass_inputs(served, values, shape)
        per = {"deeplift": 2, "deepliftshap": 2 * values["samples"], "integrated_gradients": values["ig_steps"]}
        if method in ("smoothgrad", "smoothgrad_sq", "vargrad", "gradientshap"):
            per[method] = values["samples"]
        knob = {"integrated_gradients": ("ig_steps", values["ig_steps"])}.get(method)
        if method in ("smoothgrad", "smoothgrad_sq", "vargrad", "gradientshap", "deepliftshap"):
            knob = ("samples", values["samples"])
        if method in PERTURBATION_METHODS:
            count = perturbations(method, shape[1:], values["window"], values["stride"])
            return attribution_cost(served, values, shape, inputs=1 + count, batch=min(batch, count))
        grads = per.get(method, 1)
        return attribution_cost(served, values, shape, inputs=1, grad_inputs=grads, batch=min(batch, grads),
                                knob=knob)  # fmt: skip

    def run(self, served, x, values):
        v0 = values[0]
        method = v0["method"]
        with torch.inference_mode():
            logits = served.model(x)
        targets = targets_of(values, logits)
        base = baseline(v0["baseline"], served.mean, served.std)
        attributions = saliency(
            served.model, x, targets, method, samples=v0["samples"], noise=v0["noise"], steps=v0["ig_steps"],
            baseline=None if base is None else base.to(x.device)[None], window=v0["window"], stride=v0["stride"],
            max_perturbations=served.limits.max_perturbations, batch=self.pass_inputs(served, v0, x.shape[1:]),
        )  # fmt: skip
        maps = attribution_map(attributions, method)
        faith = faithfulness_fields(served, x, maps, targets, values)
        probs = logits.softmax(-1).cpu()
        signed = method in SIGNED_METHODS
        return [
            (attribution_entry(served, v, x[k], maps[k], int(targets[k]), probs[k], signed=signed, pixels=True,
                               method=method, **faith[k]), probs[k])
            for k, v in enumerate(values)
        ]  # fmt: skip
