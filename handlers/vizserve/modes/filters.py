"""filters: the kernels of convolutions; first-layer ones as RGB pictures, deeper ones as a coloured matrix."""

from __future__ import annotations

from cnnviz import InvalidOption, kernel_matrix, rgb_filter_tiles

from .. import render
from ..passes import Passes
from .base import StaticMode
from .featuremaps import CHANNELS, LAYERS, layer_list, shown

#: Deeper filters are drawn as a matrix of at most this many rows (output filters) and columns (input channels).
MAX_MATRIX = 128


class Filters(StaticMode):
    name = "filters"
    summary = "convolution kernels: RGB pictures for the first layer, a blue-white-red matrix for deeper ones"
    options = (LAYERS.but(None, "the first and the last convolution"), CHANNELS)

    def finish(self, values, served, fields):
        values["layers"] = layer_list(values, served, served.spec.filter_layers, "filters")
        for name in values["layers"]:
            if served.modules[name].weight.dim() not in (4, 5):
                raise InvalidOption(f"layer {name!r} has {served.modules[name].weight.dim() - 2}-D kernels; filters "
                                    f"are drawn for 2-D and 3-D convolutions")  # fmt: skip
        return values

    def cost(self, served, values, shape, memory):
        """No pass: each layer's tiles (48 px at least) or matrix (at most 128 x 128 cells)."""
        pictures = 0.0
        for name in values["layers"]:
            out, inp = served.modules[name].weight.shape[:2]
            pictures += min(values["channels"] or out, out) * 48 * 48 if inp == 3 else MAX_MATRIX * MAX_MATRIX * 16
        return Passes(pictures=pictures)

    def present(self, served, values):
        return [self._entry(served, values, name) for name in values["layers"]]

    @staticmethod
    def _entry(served, values, name):
        weight = served.modules[name].weight.detach().cpu()
        shape = list(weight.shape)
        arch = served.spec.arch
        over_time = "; time to the right" if weight.dim() == 5 else ""
        if weight.shape[1] == 3:
            tiles, idx = rgb_filter_tiles(weight, values["channels"])
            title = f"{arch} {name} filters {shape} as RGB, {shown('filters', idx, shape[0])}{over_time}"
            png = render.grid_png(tiles, [str(i) for i in idx], title)
        else:
            n = min(values["channels"] or MAX_MATRIX, MAX_MATRIX)
            cells, rows, cols = kernel_matrix(weight, n, n)
            if (len(rows), len(cols)) == tuple(shape[:2]):
                subset = f"all {shape[0]} x {shape[1]}"
            else:
                subset = f"{shown('rows', rows, shape[0], '')}, {shown('columns', cols, shape[1])}"
            title = f"{arch} {name} filters {shape}: rows out, columns in, blue < 0 < red{over_time}; {subset}"
            png = render.matrix_png(cells, rows, cols, title)
        return {"layer": name, "shape": shape, "image": png}
