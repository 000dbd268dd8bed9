"""gradcam: class activation maps (Grad-CAM, Grad-CAM++, guided Grad-CAM) of one layer, one target per row."""

from __future__ import annotations

import torch

from cnnviz import CAM_METHODS

from .base import BatchedMode
from .shared import (
    FAITHFULNESS,
    FAITHFULNESS_STEPS,
    LAYER,
    METHOD,
    TARGET,
    attribution_entry,
    class_index,
    faithfulness_fields,
    layer_of,
    pick_method,
)


class GradCAMMode(BatchedMode):
    name = "gradcam"
    summary = "where the network looked for a class: a CAM of 'layer', overlaid on the input"
    options = (
        METHOD.but(None, "gradcam"),
        TARGET,
        LAYER.but(None, "the last convolutional stage (the model's cam_layer)"),
        FAITHFULNESS,
        FAITHFULNESS_STEPS,
    )
    needs_input = True
    claims = {"method": tuple(CAM_METHODS)}

    def finish(self, values, served, fields):
        values["method"] = pick_method(values, tuple(CAM_METHODS), "gradcam")
        values["target"] = -1 if values["target"] is None else class_index(values["target"], served.labels)
        values["layer"] = layer_of(values, served, served.spec.cam_layer)
        return values

    def group(self, values):
        return (values["method"], values["layer"], values["faithfulness"], values["faithfulness_steps"])

    def run(self, served, x, values):
        method, layer = values[0]["method"], values[0]["layer"]
        result = CAM_METHODS[method](served.model, layer)(x, torch.tensor([v["target"] for v in values]))
        faith = faithfulness_fields(served, x, result.cams, result.targets, values)
        probs = result.logits.softmax(-1).cpu()
        return [
            (
                attribution_entry(served, v, x[k], result.cams[k], int(result.targets[k]), probs[k],
                                  method=method, layer=layer, **faith[k]),
                probs[k],
            )
            for k, v in enumerate(values)
        ]  # fmt: skip
