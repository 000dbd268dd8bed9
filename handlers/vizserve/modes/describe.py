"""describe: the model's spec and every mode with its options and defaults, so clients can build themselves."""

from __future__ import annotations

from .base import StaticMode


class Describe(StaticMode):
    name = "describe"
    summary = "the model's spec (input, preprocessing, labels, default layers) and every mode with its options"

    def present(self, served, values):
        from . import MODES  # the registry imports this module

        return {
            **served.spec.describe(),
            "min_side": served.spec.min_side,
            "modes": [mode.describe(served) for mode in MODES.values()],
        }
