"""describe: the model's spec and every mode with its options and defaults, so clients can build themselves."""

from __future__ import annotations

from collections.abc import Mapping

from ..fields import VIDEO_INPUT
from .base import Mode, StaticMode


class Describe(StaticMode):
    """Describes the modes of ``registry`` (the registry that holds this mode too: it is given, not imported)."""

    name = "describe"
    summary = "the model's spec (input, preprocessing, labels, default layers) and every mode with its options"

    def __init__(self, registry: Mapping[str, Mode]) -> None:
        self.registry = registry

    def present(self, served, values):
        video = served.spec.modality == "video"
        return {
            **served.spec.describe(),
            "labels": list(served.spec.labels),  # every label, for a client's class picker (labels_first: the 10)
            "min_side": served.spec.min_side,
            "modes": [mode.describe(served) for mode in self.registry.values()],
            # How a video is sampled (frames, start, clip): options of every request to a video model.
            "input_options": [o.describe(served) for o in VIDEO_INPUT] if video else [],
        }
