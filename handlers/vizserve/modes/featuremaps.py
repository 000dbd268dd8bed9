"""featuremaps: the outputs of chosen layers as labelled grids of channels (and, with raw, as arrays)."""

from __future__ import annotations

import math

import torch
from torchvision.utils import make_grid

from cnnviz import InvalidOption, featuremap_tiles

from .. import render
from ..options import Option
from ..passes import Passes, output_shape
from .base import ForwardMode
from .shared import add_animation

MAX_LAYERS = 16
#: A clip's feature maps are a grid of channels (rows) by frames (columns): at most this many rows.
MAX_CLIP_ROWS = 16

LAYERS = Option("layers", "names", None, "the layers to show", default_text="the first and the last convolution",
                allowed_text=f"up to {MAX_LAYERS} module names exactly as model.named_modules() spells them "
                "(mode=layers lists them; names are only looked up, never evaluated); feature maps need a [C, H, W] "
                "output, filters a convolution")  # fmt: skip
CHANNELS = Option("channels", "count", 64, "how many channels (or filters) a picture shows, from channel 0", 1, 100_000)
NORMALIZE = Option("normalize", "choice", "channel", "channel: each map scaled on its own; layer: one scale for "
                   "the layer, so strong and weak channels compare", choices=("channel", "layer"))  # fmt: skip


def shown(what: str, idx: list[int], count: int, end: str = " shown") -> str:
    """Which of ``count`` items a picture shows: ``all 32 channels``, or ``channels 0-63 of 256 shown``."""
    if len(idx) == count:
        return f"all {count} {what}"
    span = f"{idx[0]}-{idx[-1]}" if idx == list(range(idx[0], idx[-1] + 1)) else ", ".join(map(str, idx))
    return f"{what} {span} of {count}{end}"


def layer_list(values, served, default, need: str) -> tuple[str, ...]:
    """The ``layers`` option checked for ``need`` (``spatial`` or ``filters``), or ``default``."""
    names = values["layers"]
    if names is None:
        return tuple(default)
    if not names:
        raise InvalidOption("option 'layers' is empty; give module names such as " + ", ".join(default))
    if len(names) > MAX_LAYERS:
        raise InvalidOption(f"option 'layers' names {len(names)} layers; at most {MAX_LAYERS} per request")
    return tuple(served.table.resolve(names, need=need))


class Featuremaps(ForwardMode):
    name = "featuremaps"
    summary = "the outputs of layers, one grid of channels per layer; raw=true adds the arrays [C, H, W]"
    options = (LAYERS.but(None, "the first and the last convolution, or the last stage"), CHANNELS, NORMALIZE)
    needs_input = True

    def finish(self, values, served, fields):
        values["layers"] = layer_list(values, served, served.spec.featuremap_layers, "spatial")
        return values

    def captures(self, values):
        return values["layers"]

    def cost(self, served, values, shape, memory):
        """The shared forward pass is the cost model's; here: the captured maps (kept, and raw), and their tiles
        (each enlarged or reduced to 48..128 px; a clip's grid of channels by frames, and its animation)."""
        if shape is None:
            return Passes()
        held = raw = pictures = seconds = 0.0
        for name in values["layers"]:
            out = output_shape(served, name, shape)
            held += math.prod(out) * 4
            seconds += math.prod(out) * Passes.MAP_S_PER_ELEMENT
            raw += math.prod(out) * 4 if values["raw"] else 0
            shown = min(values["channels"] or out[0], out[0])
            tile = min(128, max(48, max(out[-2:]))) ** 2
            if len(out) == 4:  # [C, T, h, w]: rows of channels by frames, and the grid frame by frame
                shown = min(shown, MAX_CLIP_ROWS)
                pictures += 2 * shown * out[1] * tile
            else:
                pictures += shown * tile
        return Passes(pictures=pictures, raw_bytes=raw, held_bytes=held, seconds=seconds)

    def present(self, served, values, probs, acts):
        return [self._entry(served, values, name, acts[name]) for name in values["layers"]]

    @staticmethod
    def _entry(served, values, name, fmap):
        channels = values["channels"]
        if fmap.dim() == 4:  # [C, T, h, w]: one row per channel, one column per frame
            channels = min(channels or MAX_CLIP_ROWS, MAX_CLIP_ROWS)
        tiles, idx = featuremap_tiles(fmap, channels, values["normalize"])
        title = f"{served.spec.arch} {name} feature maps {list(fmap.shape)}, {shown('channels', idx, fmap.shape[0])}"
        if tiles.dim() == 5:
            k, _, t = tiles.shape[:3]
            labels = [str(i) if j == 0 else f"t{j}" for i in idx for j in range(t)]
            flat = tiles.transpose(1, 2).reshape(k * t, 1, *tiles.shape[-2:])
            image = render.grid_png(flat, labels, f"{title}; frames to the right", nrow=t)
            grids = [
                make_grid(tiles[:, :, j], nrow=math.ceil(math.sqrt(k)), padding=2, pad_value=0.12) for j in range(t)
            ]
            movie = {}
            add_animation(movie, values, torch.stack(grids), served)  # the channels' grid, frame by frame
        else:
            image = render.grid_png(tiles, [str(i) for i in idx], title)
        entry = {"layer": name, "shape": list(fmap.shape), "image": image}
        if fmap.dim() == 4:
            entry.update(movie)
        if values["raw"]:
            entry["raw"] = render.npy_bytes(fmap)
        return entry
