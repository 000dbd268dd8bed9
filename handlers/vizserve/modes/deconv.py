"""deconv: the Zeiler & Fergus deconvnet projection of one channel of a layer back to pixels."""

from __future__ import annotations

import math

import torch

from cnnviz import attribution_map, deconv_projection

from .. import render
from ..options import as_int
from ..passes import Passes, picture_pixels
from .base import BatchedMode
from .shared import CHANNEL, COLORMAP, LAYER, colormap_of, layer_of, map_scale


class Deconv(BatchedMode):
    name = "deconv"
    summary = "Zeiler & Fergus: one channel of 'layer' projected back to pixels through the deconvnet"
    options = (
        LAYER.but(None, "the last convolutional stage (the model's cam_layer)"),
        CHANNEL.but(None, "the most active one"),
        COLORMAP,
    )
    needs_input = True

    def finish(self, values, served, fields):
        values["layer"] = layer_of(values, served, served.spec.cam_layer)
        count = served.table[values["layer"]].output_shape[0]
        values["channel"] = -1 if values["channel"] is None else as_int("channel", values["channel"], 0, count - 1)
        return values

    def group(self, values):
        return (values["layer"],)

    def cost(self, served, values, shape, memory):
        """A pass up to the layer, then one down through the deconvnet (a backward); two pictures."""
        frames = shape[1] if len(shape) == 4 else 1
        return Passes(inputs=1, grad_inputs=1, grad=True, pictures=picture_pixels(*shape[-2:], 2, frames),
                      raw_bytes=math.prod(shape) * 4 if values["raw"] else 0)  # fmt: skip

    def run(self, served, x, values):
        layer = values[0]["layer"]
        asked = torch.tensor([v["channel"] for v in values], device=x.device)
        projection, channels, peaks = deconv_projection(served.model, x, layer, asked)
        entries = []
        for k, v in enumerate(values):
            heat = attribution_map(projection[k : k + 1], "deconvnet")[0]
            top, where, ticks = map_scale(heat, signed=False)
            title = f"deconv of {layer} channel {int(channels[k])} (activation {float(peaks[k]):.3g})"
            entry = {
                "layer": layer,
                "channel": int(channels[k]),
                "activation": float(peaks[k]),
                "max": top,
                "image": render.rgb_png(projection[k], f"{title}, RGB scaled min..max"),
                "heatmap": render.map_png(where.cpu(), title=f"{title}, magnitude", ticks=ticks,
                                          colormap=colormap_of(v, signed=False)),
            }  # fmt: skip
            if v["raw"]:
                entry["raw"] = render.npy_bytes(projection[k])
            entries.append((entry, None))
        return entries
