"""invert: an image whose output at a layer matches the uploaded image's (feature inversion)."""

from __future__ import annotations

from cnnviz import InvalidOption, Settings, invert

from .optimizing import COMMON, TRANSFORMS, TV, Optimizing
from .shared import LAYER, layer_of


class Invert(Optimizing):
    name = "invert"
    summary = "feature inversion (Mahendran & Vedaldi): an image whose output at 'layer' matches the input's"
    options = (
        LAYER.but(None, "the last convolution of the default feature-map layers"),
        *(TV.but(0.05) if o is TV else TRANSFORMS.but(False) if o is TRANSFORMS else o for o in COMMON),
    )
    needs_input = True

    def finish(self, values, served, fields):
        if served.spec.modality == "video":
            raise InvalidOption("mode invert needs an uploaded clip, which video models cannot take yet")
        values = super().finish(values, served, fields)
        values["layer"] = layer_of(values, served, served.spec.featuremap_layers[-1])
        return values

    def run(self, served, values, x, budget_s, progress):
        settings = Settings(**self.settings(served, values, x, budget_s))
        result = invert(served.model, x.to(served.device), values["layer"], settings, progress)
        # invert maximizes minus the relative error: report the error itself
        return self.entry(values, result, 0, names=("start_error", "error"), sign=-1.0, layer=values["layer"])
