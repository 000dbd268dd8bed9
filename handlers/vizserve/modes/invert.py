"""invert: an image whose output at a layer matches the uploaded image's (feature inversion)."""

from __future__ import annotations

from cnnviz import FeatureMatch, InvalidOption, Optimization, Settings

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

    def start(self, served, values, x):
        settings = Settings(**self.settings(served, values, x, None))
        objective = FeatureMatch(served.model, x.to(served.device), values["layer"])
        return Optimization(served.model, 1, objective, settings)

    def present(self, served, values, result):
        # invert maximizes minus the relative error: report the error itself
        title = f"inverted from {values['layer']}, error {-float(result.end[0]):.3g}"
        return self.entry(values, result, 0, names=("start_error", "error"), sign=-1.0, title=title,
                          layer=values["layer"])  # fmt: skip
