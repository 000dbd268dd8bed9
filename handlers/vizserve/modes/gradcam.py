"""gradcam: class activation maps of one layer (the CAM methods of pytorch-grad-cam), one target per row."""

from __future__ import annotations

import time

import torch

from cnnviz import AUGMENTATIONS, CAM_METHODS, AblationCAM, FullGrad, GuidedGradCAM, InputTooLarge, PerturbationCAM

from ..options import Option
from ..passes import memory_of, pass_batch
from .base import BatchedMode
from .shared import (
    COLORMAP,
    FAITHFULNESS,
    FAITHFULNESS_STEPS,
    LAYER,
    METHOD,
    OPACITY,
    TARGET,
    attribution_cost,
    attribution_entry,
    class_index,
    faithfulness_fields,
    layer_of,
    pick_method,
)

AUG_SMOOTH = Option("aug_smooth", "bool", False, "the mean map of the input and its mirror image, each with its "
                    "values times 0.9, 1 and 1.1 (pytorch-grad-cam's aug_smooth; 6 times the cost)")  # fmt: skip
EIGEN_SMOOTH = Option("eigen_smooth", "bool", False, "the map is the first principal component of the weighted "
                      "activations instead of their sum (pytorch-grad-cam's eigen_smooth)")  # fmt: skip


def _passes(values, served) -> int:
    """Forward passes one request costs a perturbation method (Score-CAM, Ablation-CAM): a pass per channel of its
    layer and copy of its input."""
    copies = len(AUGMENTATIONS) if values["aug_smooth"] else 1
    return served.table[values["layer"]].output_shape[0] * copies


class GradCAMMode(BatchedMode):
    name = "gradcam"
    summary = "where the network looked for a class: a CAM of 'layer', overlaid on the input"
    options = (
        METHOD.but(None, "gradcam"),
        TARGET,
        LAYER.but(None, "the last convolutional stage (the model's cam_layer); none for fullgrad"),
        AUG_SMOOTH,
        EIGEN_SMOOTH,
        FAITHFULNESS,
        FAITHFULNESS_STEPS,
        COLORMAP,
        OPACITY,
    )
    needs_input = True
    claims = {"method": tuple(CAM_METHODS)}

    def finish(self, values, served, fields):
        values["method"] = pick_method(values, tuple(CAM_METHODS), "gradcam")
        values["target"] = -1 if values["target"] is None else class_index(values["target"], served.labels)
        method = CAM_METHODS[values["method"]]
        # FullGrad reads every layer with a bias: 'layer' does not apply (the entry says null)
        values["layer"] = None if method is FullGrad else layer_of(values, served, served.spec.cam_layer)
        cap = served.limits.max_cam_passes
        if issubclass(method, PerturbationCAM) and _passes(values, served) > cap:
            channels = served.table[values["layer"]].output_shape[0]
            copies = " x 6 aug_smooth copies" if values["aug_smooth"] else ""
            raise InputTooLarge(
                f"method={values['method']} runs one forward pass per channel of 'layer': {channels} channels of "
                f"{values['layer']}{copies} is {_passes(values, served)} passes, over this server's cap of {cap} "
                f"(max_cam_passes); name a layer with fewer channels, leave out aug_smooth, or use a gradient "
                f"method such as gradcam"
            )
        return values

    def group(self, values):
        keys = ("method", "layer", "aug_smooth", "eigen_smooth", "faithfulness", "faithfulness_steps")
        return tuple(values[k] for k in keys)

    def rows(self, served, values, shape):
        if issubclass(CAM_METHODS[values["method"]], PerturbationCAM):
            return 1 << 30  # one row at a time, each in passes of perturbation_batch inputs
        copies = len(AUGMENTATIONS) if values["aug_smooth"] else 1
        return max(1, super().rows(served, values, shape) // copies)

    @staticmethod
    def perturbation_batch(served, values, shape) -> int:
        """Inputs a pass of Score-CAM or Ablation-CAM holds: their own batch (16), or what fits the memory."""
        return pass_batch(served, shape, False, memory_of(served, values), PerturbationCAM.batch_size)

    def cost(self, served, values, shape, memory):
        """Gradient methods: a forward and backward pass an input copy (aug_smooth: 6; guided Grad-CAM adds
        guided backprop's). Score-CAM: a pass per channel of the layer and copy; Ablation-CAM: the same, of the
        layers above the layer only."""
        method = CAM_METHODS[values["method"]]
        copies = len(AUGMENTATIONS) if values["aug_smooth"] else 1
        if issubclass(method, PerturbationCAM):
            share = served.table.share_after(values["layer"]) if issubclass(method, AblationCAM) else 1.0
            passes = _passes(values, served) * max(share, 0.02) + copies  # and one pass to the layer a copy
            return attribution_cost(served, values, shape, inputs=passes,
                                    batch=self.perturbation_batch(served, values, shape))  # fmt: skip
        grads = copies * (2 if method is GuidedGradCAM else 1)
        return attribution_cost(served, values, shape, grad_inputs=grads, batch=copies)

    def run(self, served, x, values):
        v0 = values[0]
        method, layer = v0["method"], v0["layer"]
        cls = CAM_METHODS[method]
        targets = torch.tensor([v["target"] for v in values])
        smooth = {"aug_smooth": v0["aug_smooth"], "eigen_smooth": v0["eigen_smooth"]}
        if issubclass(cls, PerturbationCAM):
            # a pass per channel and row: parts of at most max_cam_passes, all within the batch's time budget
            cap, deadline = served.limits.max_cam_passes, time.monotonic() + served.limits.max_busy_seconds
            rows = max(1, cap // _passes(v0, served))
            batch = self.perturbation_batch(served, v0, x.shape[1:])
            cam = cls(served.model, layer, max_passes=cap, deadline=deadline, batch_size=batch)
            parts = [cam(x[i : i + rows], targets[i : i + rows], **smooth) for i in range(0, len(x), rows)]
            cams, logits = torch.cat([r.cams for r in parts]), torch.cat([r.logits for r in parts])
            chosen = torch.cat([r.targets for r in parts])
        else:
            result = cls(served.model, layer)(x, targets, **smooth)
            cams, logits, chosen = result.cams, result.logits, result.targets
        faith = faithfulness_fields(served, x, cams, chosen, values)
        probs = logits.softmax(-1).cpu()
        return [
            (
                attribution_entry(
                    served, v, x[k], cams[k], int(chosen[k]), probs[k], method=method, layer=layer, **faith[k]
                ),
                probs[k],
            )
            for k, v in enumerate(values)
        ]
