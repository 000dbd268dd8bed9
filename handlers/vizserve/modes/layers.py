"""layers: the table of named modules with their types and output shapes."""

from __future__ import annotations

from .base import StaticMode


class Layers(StaticMode):
    name = "layers"
    summary = "every named module with its type and output shape for the model's input size"

    def present(self, served, values):
        return [info.as_dict() for info in served.table]
