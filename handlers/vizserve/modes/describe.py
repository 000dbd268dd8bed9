"""describe: the model's spec and every mode with its options and defaults, so clients can build themselves."""

from __future__ import annotations

from .base import StaticMode


class Describe(StaticMode):
    name = "describe"
    summary = "the model's spec (input, preprocessing, labels, default layers) and every mode with its options"

    def present(self, served, values):
        from ..request import VIDEO_INPUT  # the request parser imports the modes
        from . import MODES  # the registry imports this module

        video = served.spec.modality == "video"
        return {
            **served.spec.describe(),
            "labels": list(served.spec.labels),  # every label, for a client's class picker (labels_first: the 10)
            "min_side": served.spec.min_side,
            "modes": [mode.describe(served) for mode in MODES.values()],
            # How a video is sampled (frames, start, clip): options of every request to a video model.
            "input_options": [o.describe(served) for o in VIDEO_INPUT] if video else [],
        }
